# ruff: noqa: E501  (the records are data: one string per line)
"""Build the shipped replay set `data/replay/general.jsonl`: general instruction records, English and Chinese, that
a training recipe mixes back in with `replay: 0.1` against forgetting (docs/scoring.md#replay).

Two parts:
- written for this project (below): everyday English and Chinese tasks (explaining, rewriting, summarising,
  planning, short letters, reasoning), none a question of the forgetting probes;
- drawn from MIT-licensed public data (copied here so a fresh clone has it; see NOTICE.md): Chinese term explanations,
  classical poetry and culture and integer arithmetic (hikariming/alpaca_chinese_dataset) and English programming
  instructions (teknium1/GPTeacher codegen), a fixed seeded sample of each.

    python data/replay/build.py [--data-dir ../shared/data]   # rewrites general.jsonl, the same bytes on every run
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20261201

WRITTEN_EN = [
    (
        "Explain in two sentences why we see lightning before we hear thunder.",
        "Light travels about a million times faster than sound, so the flash reaches your eyes almost instantly. The sound of the thunder needs roughly three seconds to cover each kilometre, which is why it arrives later.",
    ),
    (
        "Rewrite this sentence so it sounds more polite.",
        "Send me the report now.",
        "Could you please send me the report when you have a moment? Thank you.",
    ),
    (
        "Give three tips for staying focused while studying.",
        "1. Put your phone in another room so notifications cannot interrupt you.\n2. Work in blocks of 25 to 50 minutes with short breaks in between.\n3. Write down the one task you want to finish before you start.",
    ),
    (
        "Summarise the following paragraph in one sentence.",
        "The town library opened a new reading room last month. It has large windows, comfortable chairs and a corner with picture books for young children. Since the opening, the number of visitors on weekends has almost doubled.",
        "The library's new, comfortable reading room has nearly doubled its weekend visitors.",
    ),
    (
        "Write a short email telling a colleague that a meeting has moved from Tuesday to Thursday at the same time.",
        "Hi Sam,\n\nJust a quick note: our meeting has moved from Tuesday to Thursday, same time. The room stays the same. Let me know if Thursday does not work for you.\n\nBest regards,\nAlex",
    ),
    (
        "What is the difference between weather and climate?",
        "Weather is the state of the atmosphere at a given place and time: today's rain, wind or sunshine. Climate is the typical pattern of weather in a region over many years, such as hot summers and mild winters.",
    ),
    (
        "Turn this list into a complete sentence.",
        "eggs, flour, milk, sugar",
        "To make the batter you need eggs, flour, milk and sugar.",
    ),
    (
        "Suggest a simple plan for someone who wants to start running.",
        "Start with three sessions a week. In each, walk for five minutes to warm up, then alternate one minute of easy running with two minutes of walking for twenty minutes. Each week, run a little longer and walk a little less, until you can run for twenty minutes without stopping.",
    ),
    (
        "Correct the grammar in this sentence.",
        "She don't like apples and she have never eat one.",
        "She doesn't like apples, and she has never eaten one.",
    ),
    (
        "Explain what a budget is to a ten-year-old.",
        "A budget is a plan for your money. You write down how much money you get, then decide how much to spend on things you need, how much on things you want, and how much to save for later.",
    ),
    (
        "If a train leaves at 9:40 and the journey takes 1 hour and 35 minutes, when does it arrive?",
        "It arrives at 11:15. Adding 1 hour to 9:40 gives 10:40, and 35 more minutes gives 11:15.",
    ),
    (
        "Give two reasons why people keep a diary.",
        "Writing down what happened helps people remember events and notice patterns in their lives. It is also a private place to sort out feelings and think through problems.",
    ),
    (
        "Write a one-line description for a photo of a cat sleeping in the sun.",
        "A ginger cat curled up asleep in a warm patch of afternoon sunlight.",
    ),
    (
        "Classify each item as a fruit or a vegetable.",
        "banana, carrot, apple, spinach",
        "Fruits: banana, apple. Vegetables: carrot, spinach.",
    ),
    (
        "Explain why it is a good idea to back up files.",
        "Computers, phones and disks can break, be lost or be stolen, and files can be deleted by mistake. A backup is a second copy kept somewhere else, so you can get your work and photos back when the original is gone.",
    ),
    (
        "Put these steps for making tea in the right order.",
        "pour the water, boil the water, add the tea bag, wait three minutes",
        "1. Boil the water.\n2. Add the tea bag to the cup.\n3. Pour the water.\n4. Wait three minutes.",
    ),
    (
        "Write a friendly reminder that the library book is due on Friday.",
        "Friendly reminder: your library book is due back this Friday. You can return it at the front desk or renew it online.",
    ),
    (
        "What does it mean to recycle?",
        "To recycle is to collect used materials such as paper, glass, metal or plastic and process them so they can be made into new products instead of being thrown away.",
    ),
    (
        "Make this sentence shorter without changing its meaning.",
        "In spite of the fact that it was raining, we decided that we would go for a walk.",
        "Although it was raining, we went for a walk.",
    ),
    (
        "Name three ways to save water at home.",
        "Turn off the tap while brushing your teeth, fix dripping taps, and run the washing machine only with a full load.",
    ),
    (
        'Explain the rule of thumb "measure twice, cut once".',
        "It means you should check your work carefully before doing something you cannot undo. Checking a measurement again costs a moment, while a wrong cut wastes material.",
    ),
    (
        "A shop sells pens at 3 for 2 dollars. How much do 12 pens cost?",
        "12 pens are 4 groups of 3, and each group costs 2 dollars, so they cost 8 dollars.",
    ),
    (
        "Write a short thank-you note to a neighbour who watered your plants.",
        "Dear Mrs Green, thank you so much for watering my plants while I was away. They all look healthy and happy. I brought you some biscuits as a small thank you!",
    ),
    (
        "Describe the taste of a lemon to someone who has never had one.",
        "A lemon tastes very sour and sharp, so much that it makes your mouth pucker. Its juice is fresh and bright, with a slight bitterness from the peel.",
    ),
    ("Give an example of a sentence in the past tense.", "Yesterday we walked to the river and watched the boats."),
    (
        "Explain why the sky looks darker at night.",
        "At night our side of the Earth faces away from the Sun, so no sunlight is scattered by the air above us. Without that scattered light, the sky looks dark and we can see the stars.",
    ),
    (
        "List the steps to wash your hands properly.",
        "1. Wet your hands with clean water.\n2. Apply soap and rub your palms, backs of hands, between the fingers and under the nails.\n3. Scrub for at least 20 seconds.\n4. Rinse well.\n5. Dry with a clean towel.",
    ),
    (
        "Convert this informal message into a formal one.",
        "hey, can't make it tmrw, sorry!",
        "Dear colleagues, I regret that I will be unable to attend tomorrow. My apologies for any inconvenience.",
    ),
    (
        "What is a good way to remember a new word in a foreign language?",
        "Use it in a sentence of your own, say it aloud, and review it again after a day and after a week. Linking the word to a picture or a story also helps it stick.",
    ),
    (
        "Explain what an umbrella is for in one sentence.",
        "An umbrella is a folding canopy on a stick that keeps rain or strong sun off the person holding it.",
    ),
]

WRITTEN_ZH = [
    (
        "用两三句话解释为什么要多喝水。",
        "人体的大部分由水组成，水帮助运送养分、调节体温和排出废物。喝水不足容易让人疲劳、头痛，注意力下降。",
    ),
    ("把下面这句话改得更礼貌一些。", "把文件给我。", "麻烦您把文件发给我，谢谢！"),
    (
        "给出三条提高睡眠质量的建议。",
        "1. 每天固定时间上床和起床。\n2. 睡前一小时不看手机和电脑。\n3. 保持卧室安静、黑暗、凉爽。",
    ),
    (
        "用一句话概括下面这段话。",
        "小区门口新开了一家面包店。店里的面包每天早上现烤，价格也不贵。开业一周以来，每天早上都有很多人排队购买。",
        "小区门口新开的面包店现烤实惠，开业一周每天早上都排长队。",
    ),
    (
        "写一条通知，告诉同学们明天的班会改到下午三点。",
        "各位同学：明天的班会时间调整为下午三点，地点不变，请大家准时参加。",
    ),
    (
        "解释一下“节约用电”有哪些简单的做法。",
        "离开房间时随手关灯，电器不用时拔掉插头，空调温度夏天不要调得太低，尽量选择节能电器。",
    ),
    ("改正下面句子中的错别字。", "今天天气很好，我们一起去公圆散步。", "今天天气很好，我们一起去公园散步。"),
    ("一本书原价40元，打八折后是多少钱？", "打八折就是原价乘以0.8，40×0.8=32，所以是32元。"),
    (
        "为什么出门前要看天气预报？",
        "看天气预报可以提前知道会不会下雨、气温高低，从而决定带不带伞、穿什么衣服，避免被天气影响出行。",
    ),
    (
        "写一段话感谢老师的帮助。",
        "老师，谢谢您这一年来耐心的指导。每当我遇到难题，您总是细心讲解，让我学会了思考，也更有信心了。",
    ),
    ("把下面的词语按水果和蔬菜分类。", "苹果、白菜、香蕉、土豆", "水果：苹果、香蕉。蔬菜：白菜、土豆。"),
    (
        "简单说明怎样正确洗手。",
        "先用清水打湿双手，抹上肥皂，搓洗手心、手背、指缝和指甲，至少二十秒，然后用清水冲净，最后用干净的毛巾擦干。",
    ),
]


def written() -> list[dict[str, str]]:
    out = []
    for item in [*WRITTEN_EN, *WRITTEN_ZH]:
        instruction, *rest = item
        inp, output = (rest[0], rest[1]) if len(rest) == 2 else ("", rest[0])
        out.append({"instruction": instruction, "input": inp, "output": output})
    return out


def drawn(data_dir: Path, rng: random.Random) -> list[dict[str, str]]:
    def read(name: str) -> list[dict[str, str]]:
        return json.loads((data_dir / name).read_text(encoding="utf-8"))

    terms = [r for r in read("zh_term_explanations.json") if 0 < len(r["output"]) <= 400]
    poetry = [r for r in read("zh_poetry_culture.json") if r["output"].strip()]
    arithmetic = read("zh_integer_arithmetic.json")
    code = [
        {"instruction": r["instruction"], "input": r.get("input", ""), "output": r["response"]}
        for r in read("en_codegen_instruct.json")
        if 0 < len(r["response"]) <= 700
    ]
    picked = rng.sample(terms, 40) + rng.sample(poetry, 12) + rng.sample(arithmetic, 12) + rng.sample(code, 30)
    return [{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in picked]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", type=Path, default=HERE.parent.parent.parent / "shared" / "data")
    args = ap.parse_args()
    rng = random.Random(SEED)
    records = written() + drawn(args.data_dir, rng)
    rng.shuffle(records)
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records)
    (HERE / "general.jsonl").write_text(text, encoding="utf-8")
    print(f"wrote {HERE / 'general.jsonl'}: {len(records)} records")


if __name__ == "__main__":
    main()

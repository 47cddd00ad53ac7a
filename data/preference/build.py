"""Rebuild the shipped bilingual preference set: `prefs.jsonl` (training) and `prefs_eval.jsonl` (held out).

Written for this project (no outside data). Every pair asks a short factual question in English or Chinese and
states one rule: answer with a JSON object `{"answer": ...}`. The rule is stated in the user's message ("Answer in
JSON.", "用JSON回答。") or, for about one pair in five, in a system prompt instead. `chosen` follows it; `rejected`
gives the same (correct) answer in plain prose, so the only thing that tells the two apart is the format:
a strong surface signal (the first token is `{`) that a 135M model learns in a few minutes of DPO with LoRA.

Lengths are balanced on purpose, so the set does not teach "longer is better" (or "shorter"): for each pair the
prose template is picked to be, in turn, just longer and just shorter than the JSON answer in the embedded model's
tokens (what DPO's log-probabilities sum over), so about half the pairs have the longer answer chosen and the mean
chosen/rejected length ratio is close to 1. The script prints both, per language, in tokens and in UTF-8 bytes;
`wb clean` measures UTF-8 bytes (its tokenizer-free proxy) under `preference.length_bias`.

The held-out file shares no question with the training file (whole items are split, stratified by language and
task). Deterministic: run it again and the files are byte-identical. From the repository root:
`.venv/bin/python data/preference/build.py` (it needs the `train` extra and the embedded model for its tokenizer).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEED = 17
EVAL_PER_LANGUAGE = 26  # held-out pairs per language (52 in all)
SYSTEM_SHARE = 0.2  # pairs whose rule is stated in a system prompt instead of the user's message

CAPITALS = [  # (country EN, capital EN, country ZH, capital ZH)
    ("France", "Paris", "法国", "巴黎"),
    ("Japan", "Tokyo", "日本", "东京"),
    ("Italy", "Rome", "意大利", "罗马"),
    ("Spain", "Madrid", "西班牙", "马德里"),
    ("Germany", "Berlin", "德国", "柏林"),
    ("Egypt", "Cairo", "埃及", "开罗"),
    ("Russia", "Moscow", "俄罗斯", "莫斯科"),
    ("Canada", "Ottawa", "加拿大", "渥太华"),
    ("Australia", "Canberra", "澳大利亚", "堪培拉"),
    ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
    ("Peru", "Lima", "秘鲁", "利马"),
    ("Greece", "Athens", "希腊", "雅典"),
    ("Norway", "Oslo", "挪威", "奥斯陆"),
    ("Thailand", "Bangkok", "泰国", "曼谷"),
    ("Portugal", "Lisbon", "葡萄牙", "里斯本"),
    ("Austria", "Vienna", "奥地利", "维也纳"),
    ("South Korea", "Seoul", "韩国", "首尔"),
    ("Vietnam", "Hanoi", "越南", "河内"),
    ("Argentina", "Buenos Aires", "阿根廷", "布宜诺斯艾利斯"),
    ("Ireland", "Dublin", "爱尔兰", "都柏林"),
    ("Poland", "Warsaw", "波兰", "华沙"),
    ("Sweden", "Stockholm", "瑞典", "斯德哥尔摩"),
    ("Mexico", "Mexico City", "墨西哥", "墨西哥城"),
    ("India", "New Delhi", "印度", "新德里"),
    ("China", "Beijing", "中国", "北京"),
    ("Cuba", "Havana", "古巴", "哈瓦那"),
]

ANTONYMS_EN = [
    ("hot", "cold"), ("big", "small"), ("fast", "slow"), ("happy", "sad"), ("up", "down"), ("open", "closed"),
    ("light", "dark"), ("early", "late"), ("rich", "poor"), ("full", "empty"), ("strong", "weak"), ("old", "young"),
    ("hard", "soft"), ("wet", "dry"), ("loud", "quiet"), ("high", "low"), ("true", "false"), ("win", "lose"),
    ("buy", "sell"), ("push", "pull"), ("first", "last"), ("inside", "outside"), ("thick", "thin"),
    ("cheap", "expensive"),
]  # fmt: skip

ANTONYMS_ZH = [
    ("大", "小"), ("高", "矮"), ("快", "慢"), ("冷", "热"), ("长", "短"), ("多", "少"), ("前", "后"), ("上", "下"),
    ("黑", "白"), ("新", "旧"), ("胖", "瘦"), ("远", "近"), ("开", "关"), ("早", "晚"), ("左", "右"), ("买", "卖"),
    ("真", "假"), ("深", "浅"), ("轻", "重"), ("美", "丑"), ("哭", "笑"), ("进", "出"), ("干", "湿"), ("甜", "苦"),
]  # fmt: skip

PLURALS = [
    ("child", "children"), ("mouse", "mice"), ("foot", "feet"), ("tooth", "teeth"), ("person", "people"),
    ("box", "boxes"), ("city", "cities"), ("knife", "knives"), ("leaf", "leaves"), ("woman", "women"),
    ("goose", "geese"), ("baby", "babies"), ("bus", "buses"), ("wolf", "wolves"), ("man", "men"), ("glass", "glasses"),
]  # fmt: skip

COLOURS = [  # (thing EN, colour EN, thing ZH, colour ZH)
    ("a ripe banana", "yellow", "成熟的香蕉", "黄色"),
    ("fresh grass", "green", "新鲜的草", "绿色"),
    ("a clear daytime sky", "blue", "晴朗的天空", "蓝色"),
    ("fresh snow", "white", "新雪", "白色"),
    ("coal", "black", "煤炭", "黑色"),
    ("a ripe tomato", "red", "成熟的西红柿", "红色"),
    ("a carrot", "orange", "胡萝卜", "橙色"),
    ("milk", "white", "牛奶", "白色"),
    ("a lemon", "yellow", "柠檬", "黄色"),
    ("a strawberry", "red", "草莓", "红色"),
]

COUNTS = [  # (question EN, number, question ZH)
    ("How many days are in a week?", 7, "一个星期有几天？"),
    ("How many months are in a year?", 12, "一年有几个月？"),
    ("How many legs does a spider have?", 8, "蜘蛛有几条腿？"),
    ("How many hours are in a day?", 24, "一天有多少个小时？"),
    ("How many minutes are in an hour?", 60, "一小时有多少分钟？"),
    ("How many continents are there?", 7, "世界上有几个大洲？"),
    ("How many sides does a triangle have?", 3, "三角形有几条边？"),
    ("How many legs does a dog have?", 4, "狗有几条腿？"),
    ("How many seasons are in a year?", 4, "一年有几个季节？"),
    ("How many sides does a hexagon have?", 6, "六边形有几条边？"),
]

RULE_EN = ["Answer in JSON.", "Reply with a JSON object.", "Give your answer as JSON.", 'Answer as {"answer": ...}.']
RULE_ZH = ["用JSON回答。", "请以JSON格式回答。", "回答请用JSON对象。", '请按{"answer": ...}的格式回答。']
SYSTEM_EN = 'Always reply with one JSON object of the form {"answer": ...} and nothing else.'
SYSTEM_ZH = '请始终只用一个JSON对象回答，格式为{"answer": ...}。'

# Plain-prose answers carrying the same answer; from short to long.
PROSE_EN = [
    "{a}",
    "{a}.",
    "It is {a}.",
    "Answer: {a}.",
    "I'd say {a}.",
    "It would be {a}.",
    "The answer is {a}.",
    "That would be {a}.",
    "Sure! The answer is {a}.",
    "The correct answer is {a}.",
    "I am quite sure it is {a}.",
    "The answer to that is {a}, of course.",
]
PROSE_ZH = [
    "{a}",
    "{a}。",
    "答：{a}",
    "是{a}。",
    "应该是{a}。",
    "答案是{a}。",
    "答案应该是{a}。",
    "答案是：{a}。",
    "好的，答案是{a}。",
    "正确答案是{a}。",
    "我很确定答案是{a}。",
    "这个问题的答案是{a}，很简单。",
    "这个问题不难，正确的答案就是{a}。",
    "我想正确的答案应该是{a}。",
]


def items(rng: random.Random) -> list[dict[str, Any]]:
    """Every (language, task, question, answer) item of the set, in a fixed order."""
    out: list[dict[str, Any]] = []

    def add(lang: str, task: str, question: str, answer: Any) -> None:
        out.append({"lang": lang, "task": task, "question": question, "answer": answer})

    for country, city, country_zh, city_zh in CAPITALS:
        add("en", "capital", f"What is the capital of {country}?", city)
        add("zh", "capital", f"{country_zh}的首都是哪里？", city_zh)
    for word, opposite in ANTONYMS_EN:
        add("en", "antonym", f'What is the opposite of "{word}"?', opposite)
    for word, opposite in ANTONYMS_ZH:
        add("zh", "antonym", f"“{word}”的反义词是什么？", opposite)
    for word, plural in PLURALS:
        add("en", "plural", f'What is the plural of "{word}"?', plural)
    for thing, colour, thing_zh, colour_zh in COLOURS:
        add("en", "colour", f"What colour is {thing}?", colour)
        add("zh", "colour", f"{thing_zh}是什么颜色的？", colour_zh)
    for question, number, question_zh in COUNTS:
        add("en", "count", question, number)
        add("zh", "count", question_zh, number)
    for lang in ("en", "zh"):  # arithmetic fills the rest: distinct sums per language
        seen: set[tuple[int, int]] = set()
        while len(seen) < 26:
            a, b = rng.randint(2, 49), rng.randint(2, 49)
            if (a, b) in seen:
                continue
            seen.add((a, b))
            question = f"What is {a} plus {b}?" if lang == "en" else f"{a}加{b}等于多少？"
            add(lang, "arithmetic", question, a + b)
    return out


Length = Callable[[str], int]


def embedded_tokens() -> Length:
    """Length in the embedded model's tokens (SmolLM2-135M, the demo's base model): what DPO's log-probabilities
    sum over. Chinese costs it about two tokens a character, so balancing characters would not do."""
    from transformers import AutoTokenizer

    from workbench.models.base import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("embedded")))
    return lambda s: len(tokenizer(s, add_special_tokens=False)["input_ids"])


def utf8_bytes(s: str) -> int:
    return len(s.encode("utf-8"))


def prose(answer: Any, lang: str, target_longer: bool, chosen: str, length: Length) -> str:
    """The prose template closest in length to the JSON answer on the side asked for (longer or shorter)."""
    options = [t.format(a=answer) for t in (PROSE_EN if lang == "en" else PROSE_ZH)]
    n = length(chosen)
    side = [o for o in options if (length(o) > n if target_longer else length(o) < n)]
    pool = side or options
    return min(pool, key=lambda o: (abs(length(o) - n), len(o), o))


def pair(item: dict[str, Any], i: int, rng: random.Random, length: Length) -> dict[str, Any]:
    lang, answer = item["lang"], item["answer"]
    chosen = json.dumps({"answer": answer}, ensure_ascii=False)
    rejected = prose(answer, lang, target_longer=i % 2 == 0, chosen=chosen, length=length)
    rec: dict[str, Any] = {}
    if rng.random() < SYSTEM_SHARE:
        rec["system"] = SYSTEM_EN if lang == "en" else SYSTEM_ZH
        rec["prompt"] = item["question"]
    else:
        rule = rng.choice(RULE_EN if lang == "en" else RULE_ZH)
        rec["prompt"] = f"{item['question']} {rule}" if lang == "en" else f"{item['question']}{rule}"
    rec.update({"chosen": chosen, "rejected": rejected, "lang": lang, "task": item["task"]})
    return rec


def length_stats(records: list[dict[str, Any]], length: Length) -> tuple[float, float]:
    longer = sum(length(r["chosen"]) > length(r["rejected"]) for r in records) / len(records)
    ratio = sum(length(r["chosen"]) / max(length(r["rejected"]), 1) for r in records) / len(records)
    return longer, ratio


def build(length: Length) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(SEED)
    pool = items(rng)
    rng.shuffle(pool)
    held: list[dict[str, Any]] = []
    for lang in ("en", "zh"):  # held-out items: round-robin over tasks so every task is in both files
        by_task: dict[str, list[dict[str, Any]]] = {}
        for it in pool:
            if it["lang"] == lang:
                by_task.setdefault(it["task"], []).append(it)
        tasks = sorted(by_task)
        picked = 0
        while picked < EVAL_PER_LANGUAGE:
            for task in tasks:
                if picked < EVAL_PER_LANGUAGE and len(by_task[task]) > 2:
                    held.append(by_task[task].pop())
                    picked += 1
    held_ids = {id(it) for it in held}
    train_items = [it for it in pool if id(it) not in held_ids]
    train = [pair(it, i, rng, length) for i, it in enumerate(train_items)]
    evaluation = [pair(it, i, rng, length) for i, it in enumerate(held)]
    rng.shuffle(evaluation)
    return train, evaluation


def write(path: Path, records: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def main(out: Path) -> None:
    tokens = embedded_tokens()
    train, evaluation = build(tokens)
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in evaluation}
    write(out / "prefs.jsonl", train)
    write(out / "prefs_eval.jsonl", evaluation)
    for name, recs in (("prefs.jsonl", train), ("prefs_eval.jsonl", evaluation)):
        langs = {lang: sum(r["lang"] == lang for r in recs) for lang in ("en", "zh")}
        print(f"{name}: {len(recs)} pairs {langs}")
        for unit, length in (("model tokens", tokens), ("UTF-8 bytes", utf8_bytes)):
            for lang in ("en", "zh", None):
                part = [r for r in recs if lang is None or r["lang"] == lang]
                longer, ratio = length_stats(part, length)
                print(f"  {unit:12} {lang or 'all':3}: chosen longer in {longer:.2f}, mean ratio {ratio:.2f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent)

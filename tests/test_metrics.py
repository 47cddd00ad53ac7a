"""Text-overlap metrics of `wb eval`: Chinese is scored (not silently 0), identical answers score 1, sacrebleu's
tokenizer follows the references' script, empty references warn, and EM/F1/accuracy normalise like SQuAD (and
Chinese)."""

from __future__ import annotations

import random
import sys

import pytest
import sacrebleu

from workbench.evaluate.metrics import (
    METRIC_KEYS,
    accuracy,
    bleu_tokenize_for,
    exact_match,
    lcs_length,
    metric_tokens,
    normalize_answer,
    rouge,
    score_items,
    token_f1,
)

LONG_EN = " ".join(
    f"Step {i}: measure the loss on the held-out split, compare it with the previous epoch and keep the better adapter."
    for i in range(60)
)
LONG_ZH = "".join(f"第{i}步：在验证集上计算损失，与上一轮比较，保留更好的适配器。" for i in range(60))

IDENTICAL = [
    "The capital of France is Paris.",
    "我喜欢北京的秋天。",
    "用 Python 写一个 quicksort 函数，时间复杂度是 O(n log n)。",
    "Great job! 🎉 Keep going 🚀",
    "ＡＢＣ全角字母和１２３数字",
    "def add(a, b):\n    return a + b",
    LONG_EN,
    LONG_ZH,
    "42",
]


def _random_pair(rng: random.Random) -> tuple[str, str]:
    """A reference and a noisy prediction: dropped, repeated and shuffled words or characters, Chinese or English."""
    if rng.random() < 0.5:
        vocab = list("我你他的是在北京上海天气很好学习模型数据训练评估")
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 40))]
        joiner = ""
    else:
        vocab = ["the", "model", "data", "train", "eval", "loss", "adapter", "rank", "42", "Paris", "is", "a", "of"]
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 40))]
        joiner = " "
    pred = [w for w in ref if rng.random() > 0.2] + [rng.choice(vocab) for _ in range(rng.randint(0, 5))]
    if rng.random() < 0.3:
        rng.shuffle(pred)
    return joiner.join(pred), joiner.join(ref)


# --- ROUGE ----------------------------------------------------------------------------------------------------------


def test_chinese_rouge_equals_the_hand_computed_value() -> None:
    # reference  我 喜 欢 北 京 的 秋 天        (8 character tokens)
    # prediction 北 京 的 秋 天 我 很 喜 欢     (9 character tokens)
    # ROUGE-1: all 8 reference characters occur in the prediction: P = 8/9, R = 8/8, F = 2PR/(P+R) = 16/17.
    # ROUGE-2: reference bigrams 我喜 喜欢 欢北 北京 京的 的秋 秋天 (7); prediction bigrams 北京 京的 的秋 秋天 天我
    #          我很 很喜 喜欢 (8); shared: 北京 京的 的秋 秋天 喜欢 = 5: P = 5/8, R = 5/7, F = 2/3.
    # ROUGE-L: longest common subsequence 北京的秋天 = 5: P = 5/9, R = 5/8, F = (50/72) / (85/72) = 10/17.
    scores = rouge("北京的秋天我很喜欢", "我喜欢北京的秋天")
    assert scores["rouge1"] == pytest.approx(16 / 17)
    assert scores["rouge2"] == pytest.approx(2 / 3)
    assert scores["rouge_l"] == pytest.approx(10 / 17)


def test_rouge_scores_chinese_where_rouge_scores_default_tokenizer_gives_zero() -> None:
    from rouge_score.rouge_scorer import RougeScorer

    default = RougeScorer(["rouge1"]).score("我喜欢北京的秋天", "我喜欢北京的秋天")["rouge1"].fmeasure
    assert default == 0.0  # the bug this module exists to avoid
    assert rouge("我喜欢北京的秋天", "我喜欢北京的秋天") == {"rouge1": 1.0, "rouge2": 1.0, "rouge_l": 1.0}


def test_fast_rouge_equals_rouge_scores_own_scorer_with_the_unicode_tokenizer() -> None:
    from workbench.evaluate.metrics import rouge_scorer

    scorer = rouge_scorer()
    rng = random.Random(7)
    for _ in range(300):
        pred, ref = _random_pair(rng)
        expected = scorer.score(ref, pred)
        got = rouge(pred, ref)
        assert got["rouge1"] == pytest.approx(expected["rouge1"].fmeasure, abs=1e-12)
        if len(metric_tokens(ref)) > 1 or len(metric_tokens(pred)) > 1:  # else ROUGE-2 is ROUGE-1 here, 0 there
            assert got["rouge2"] == pytest.approx(expected["rouge2"].fmeasure, abs=1e-12)
        assert got["rouge_l"] == pytest.approx(expected["rougeL"].fmeasure, abs=1e-12)


def test_bit_parallel_lcs_equals_the_dynamic_programming_table() -> None:
    def table_lcs(a: list[str], b: list[str]) -> int:
        prev = [0] * (len(b) + 1)
        for x in a:
            cur = [0]
            for j, y in enumerate(b):
                cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
            prev = cur
        return prev[-1]

    rng = random.Random(3)
    for _ in range(500):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 30))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 80))]
        assert lcs_length(a, b) == table_lcs(a, b)


def test_one_token_answers_get_rouge2_from_rouge1_instead_of_zero() -> None:
    assert rouge("42", "42")["rouge2"] == 1.0
    assert rouge("43", "42")["rouge2"] == 0.0
    assert rouge("北", "北")["rouge2"] == 1.0
    assert rouge("The answer is 42", "42")["rouge2"] == 0.0  # the prediction has bigrams, the reference none


def test_metric_tokens_split_cjk_characters_and_lowercase_latin_words() -> None:
    assert metric_tokens("Hello, 世界! GPT-4 ＡＢＣ") == ["hello", "世", "界", "gpt", "4", "abc"]


# --- every metric together --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", IDENTICAL, ids=range(len(IDENTICAL)))
def test_identical_strings_score_one_on_every_metric(text: str) -> None:
    result = score_items([text], [text])
    assert result.items[0] == dict.fromkeys(METRIC_KEYS, 1.0)
    assert result.warnings == []


def test_every_item_has_exactly_the_documented_keys_in_the_unit_interval() -> None:
    rng = random.Random(1)
    pairs = [_random_pair(rng) for _ in range(200)] + [("", "something"), ("something", "🙂"), ("", "")]
    result = score_items([p for p, _ in pairs], [r for _, r in pairs])
    for item in result.items:
        assert tuple(item) == METRIC_KEYS
        assert all(0.0 <= value <= 1.0 for value in item.values())
        assert item["exact_match"] in (0, 1) and item["accuracy"] in (0, 1)


def test_a_wrong_chinese_answer_scores_below_a_partly_right_one() -> None:
    reference = "光合作用把光能转化为化学能，储存在葡萄糖中。"
    result = score_items(["光合作用把光能转化为化学能。", "今天天气很好。"], [reference, reference])
    close, wrong = result.items
    for key in ("rouge1", "rouge2", "rouge_l", "bleu", "chrf", "f1"):
        assert close[key] > wrong[key], key
    assert close["rouge1"] > 0.5


def test_empty_or_punctuation_only_references_are_counted_and_warned_about() -> None:
    result = score_items(["anything", "", "Paris", "你好"], ["", "。！", "Paris", "你好"])
    assert result.empty_references == [0, 1]
    assert len(result.warnings) == 1
    assert "2 of 4 references" in result.warnings[0]
    # SQuAD's convention: an empty reference is matched only by an empty prediction.
    assert result.items[0]["rouge1"] == 0.0 and result.items[0]["f1"] == 0.0
    assert result.items[1]["rouge1"] == 1.0 and result.items[1]["f1"] == 1.0


def test_mismatched_lengths_are_refused_and_no_items_give_an_empty_result() -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        score_items(["a", "b"], ["a"])
    empty = score_items([], [])
    assert empty.items == [] and empty.corpus == {}


def test_a_list_of_references_takes_the_best_match() -> None:
    result = score_items(["The answer is NYC."], [["New York City", "NYC"]])
    item = result.items[0]
    assert item["accuracy"] == 1
    assert item["rouge1"] == pytest.approx(rouge("The answer is NYC.", "NYC")["rouge1"])
    assert item["bleu"] == pytest.approx(
        sacrebleu.sentence_bleu("The answer is NYC.", ["New York City", "NYC"]).score / 100, abs=1e-6
    )


# --- BLEU and chrF --------------------------------------------------------------------------------------------------


def test_bleu_uses_the_zh_tokenizer_for_chinese_references_and_13a_for_english() -> None:
    zh = score_items(["我喜欢北京的秋天", "今天很冷"], ["我喜欢北京的秋天。", "今天天气很冷。"])
    en = score_items(["I like autumn in Beijing", "It is cold"], ["I like autumn in Beijing.", "It is cold today."])
    assert zh.bleu_tokenize == "zh" and "tok:zh" in zh.corpus["bleu"].signature
    assert en.bleu_tokenize == "13a" and "tok:13a" in en.corpus["bleu"].signature
    assert "nc:6" in zh.corpus["chrf"].signature
    assert "smooth:exp" in zh.sentence_bleu_signature and "eff:yes" in zh.sentence_bleu_signature
    # One Chinese reference is enough: with 13a that sentence would be one "word" and score near 0.
    assert bleu_tokenize_for(["An English answer.", "Another one.", "中文答案"]) == "zh"
    assert bleu_tokenize_for(["Only English.", "Café au lait, naïve résumé."]) == "13a"


def test_chinese_sentence_bleu_is_not_zero_for_a_close_answer() -> None:
    result = score_items(["我很喜欢北京的秋天"], ["我喜欢北京的秋天"])
    assert result.items[0]["bleu"] > 0.3


def test_bleu_and_chrf_equal_sacrebleus_own_functions() -> None:
    rng = random.Random(11)
    pairs = [_random_pair(rng) for _ in range(80)]
    preds, refs = [p for p, _ in pairs], [r for _, r in pairs]
    result = score_items(preds, refs)
    tok = result.bleu_tokenize
    for pred, ref, item in zip(preds, refs, result.items, strict=True):
        assert item["bleu"] == pytest.approx(
            min(1.0, sacrebleu.sentence_bleu(pred, [ref], tokenize=tok).score / 100), abs=1e-6
        )
        assert item["chrf"] == pytest.approx(sacrebleu.sentence_chrf(pred, [ref]).score / 100, abs=1e-6)
    assert result.corpus["bleu"].score == pytest.approx(
        sacrebleu.corpus_bleu(preds, [refs], tokenize=tok).score, abs=1e-5
    )
    assert result.corpus["chrf"].score == pytest.approx(sacrebleu.corpus_chrf(preds, [refs]).score, abs=1e-5)


# --- exact match, F1, accuracy --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "reference"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  Paris.  ", "paris"),
        ("ＡＢＣ，", "abc"),  # full-width letters and comma
        ("北京。", "北京"),
        ("“北京大学”", "北京 大学"),  # CJK quotes, and a space between Chinese characters
        ("《红楼梦》", "红楼梦"),
        ("an apple", "Apple"),
    ],
)
def test_exact_match_ignores_case_punctuation_articles_and_spacing(prediction: str, reference: str) -> None:
    assert exact_match(prediction, reference) == 1
    assert token_f1(prediction, reference) == 1.0


def test_normalize_answer_examples() -> None:
    assert normalize_answer("The Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("北京 大学。") == "北京大学"
    assert normalize_answer("ＡＢＣ，１２３") == "abc123"
    assert normalize_answer("Hello 世界 🙂") == "hello 世界 🙂"  # emoji are not punctuation


def test_token_f1_counts_chinese_characters_as_tokens() -> None:
    # prediction 北 京 (2 tokens), reference 北 京 大 学 (4): 2 shared, P = 1, R = 1/2, F1 = 2/3.
    assert token_f1("北京", "北京大学") == pytest.approx(2 / 3)
    assert token_f1("paris france", "Paris") == pytest.approx(2 / 3)
    assert exact_match("北京", "北京大学") == 0


def test_accuracy_finds_the_reference_as_whole_tokens_in_the_prediction() -> None:
    assert accuracy("The capital of France is Paris.", "Paris") == 1
    assert accuracy("中国的首都是北京。", "北京") == 1
    assert accuracy("答案是3", "3") == 1
    assert accuracy("The answer is 14.", "4") == 0
    assert accuracy("I don't know.", "Paris") == 0
    assert accuracy("It's NYC.", ["New York City", "NYC"]) == 1
    assert accuracy("It's Boston.", ["New York City", "NYC"]) == 0


def test_a_multiple_choice_letter_that_is_also_an_article_still_counts() -> None:
    assert exact_match("A", "A") == 1
    assert exact_match("B", "A") == 0
    assert accuracy("The answer is A.", "A") == 1
    assert accuracy("The answer is B.", "A") == 0


def test_metrics_do_not_import_torch_or_transformers() -> None:
    assert "workbench.evaluate.metrics" in sys.modules
    import subprocess

    code = (
        "import sys, workbench.evaluate.metrics, workbench.evaluate.compare; "
        "sys.exit(any(m in sys.modules for m in ('torch', 'transformers')))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

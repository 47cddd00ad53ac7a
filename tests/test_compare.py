"""Base vs tuned statistics of `wb eval`: reproducible bootstrap intervals that cover the truth about 95% of the time,
McNemar's test on textbook tables, wins/ties/losses in the right direction, and the STAT object of metrics.json."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workbench.evaluate.compare import bootstrap_mean_ci, mcnemar, paired_bootstrap, stat, win_tie_loss

STAT_KEYS = {"tuned", "lower", "upper"}
PAIRED_KEYS = STAT_KEYS | {"base", "delta", "delta_lower", "delta_upper", "wins", "ties", "losses"}


def _outcomes(both: int, tuned_only: int, base_only: int, neither: int) -> tuple[list[int], list[int]]:
    """Paired 0/1 outcomes from the four cells of a McNemar table."""
    tuned = [1] * both + [1] * tuned_only + [0] * base_only + [0] * neither
    base = [1] * both + [0] * tuned_only + [1] * base_only + [0] * neither
    return tuned, base


# --- bootstrap ------------------------------------------------------------------------------------------------------


def test_bootstrap_interval_is_reproducible_for_a_seed() -> None:
    values = np.random.default_rng(0).random(300)
    first = bootstrap_mean_ci(values, seed=13)
    assert bootstrap_mean_ci(values, seed=13) == first
    assert bootstrap_mean_ci(list(values), seed=13) == first  # a list or an array: same numbers
    assert bootstrap_mean_ci(values, seed=14) != first
    mean, lower, upper = first
    assert mean == pytest.approx(values.mean())
    assert lower < mean < upper


def test_bootstrap_interval_narrows_with_more_items_and_widens_with_confidence() -> None:
    rng = np.random.default_rng(1)
    small, large = rng.random(50), rng.random(5000)
    width = lambda ci: ci[2] - ci[1]  # noqa: E731
    assert width(bootstrap_mean_ci(large, seed=0)) < width(bootstrap_mean_ci(small, seed=0)) / 5
    assert width(bootstrap_mean_ci(small, seed=0, confidence=0.99)) > width(bootstrap_mean_ci(small, seed=0))


def test_paired_interval_covers_the_true_difference_about_95_percent_of_the_time() -> None:
    # 200 simulated evaluations of 100 items: per-item scores share an item difficulty (so tuned and base are
    # correlated, as on a real eval set) and tuned is better by exactly 0.05 on average.
    rng = np.random.default_rng(2024)
    true_delta, covered = 0.05, 0
    for rep in range(200):
        difficulty = rng.normal(0.5, 0.2, 100)
        base = difficulty + rng.normal(0, 0.1, 100)
        tuned = difficulty + true_delta + rng.normal(0, 0.1, 100)
        _, lower, upper = paired_bootstrap(tuned, base, seed=rep, n_resamples=2000)
        covered += lower <= true_delta <= upper
    assert 0.90 <= covered / 200 <= 0.99


def test_paired_interval_is_tighter_than_the_tuned_interval_when_items_share_difficulty() -> None:
    rng = np.random.default_rng(5)
    difficulty = rng.random(400)
    base = difficulty + rng.normal(0, 0.05, 400)
    tuned = difficulty + 0.02 + rng.normal(0, 0.05, 400)
    _, t_lower, t_upper = bootstrap_mean_ci(tuned, seed=0)
    delta, d_lower, d_upper = paired_bootstrap(tuned, base, seed=0)
    assert d_upper - d_lower < (t_upper - t_lower) / 2
    assert 0 < d_lower < delta < d_upper  # a real 0.02 gain on 400 items is detected


def test_constant_values_give_a_zero_width_interval_at_the_mean() -> None:
    assert bootstrap_mean_ci([0.7] * 20, seed=0) == (pytest.approx(0.7), pytest.approx(0.7), pytest.approx(0.7))
    mean, lower, upper = bootstrap_mean_ci([0.1] * 3, seed=0)
    assert lower <= mean <= upper


def test_no_item_or_one_item_gives_no_interval_instead_of_crashing() -> None:
    assert all(math.isnan(v) for v in bootstrap_mean_ci([], seed=0))
    mean, lower, upper = bootstrap_mean_ci([0.4], seed=0)
    assert mean == 0.4 and math.isnan(lower) and math.isnan(upper)


# --- McNemar ----------------------------------------------------------------------------------------------------------


def test_mcnemar_exact_p_on_small_hand_computed_tables() -> None:
    # 2 discordant pairs for tuned, 8 for base: p = 2 * (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 2 * 56 / 1024.
    assert mcnemar(*_outcomes(30, 2, 8, 10)) == pytest.approx(112 / 1024)
    # A textbook table (20 teenagers asked about the death penalty before and after a seminar: 11 changed one way,
    # 3 the other): two-sided exact p = 2 * (1 + 14 + 91 + 364) / 2^14 = 0.057373046875.
    assert mcnemar(*_outcomes(1, 3, 11, 5)) == pytest.approx(0.057373046875)
    # b = 12, c = 5: exact p 0.1435 (the chi-square approximation with continuity correction says 0.1456).
    assert mcnemar(*_outcomes(0, 12, 5, 0)) == pytest.approx(0.1435, abs=5e-5)


def test_mcnemar_on_a_large_table_matches_the_binomial_test() -> None:
    # b = 121, c = 59 of 314 pairs: scipy.stats.binomtest(59, 180).pvalue = 4.434449e-06 (chi-square 21.36).
    assert mcnemar(*_outcomes(101, 121, 59, 33)) == pytest.approx(4.434449e-06, rel=1e-6)
    # Thousands of discordant pairs stay exact and finite.
    p = mcnemar(*_outcomes(0, 5200, 4800, 0))
    assert 0 < p < 0.01


def test_mcnemar_is_one_without_discordant_pairs_or_with_a_balanced_split() -> None:
    assert mcnemar([1, 0, 1], [1, 0, 1]) == 1.0
    assert mcnemar([], []) == 1.0
    assert mcnemar(*_outcomes(5, 7, 7, 5)) == 1.0


def test_mcnemar_refuses_scores_that_are_not_0_or_1() -> None:
    with pytest.raises(ValueError, match="0/1"):
        mcnemar([0.5, 1.0], [1.0, 0.0])


# --- wins, ties, losses ---------------------------------------------------------------------------------------------


def test_win_tie_loss_when_higher_is_better() -> None:
    assert win_tie_loss([0.9, 0.5, 0.1, 0.3], [0.1, 0.5, 0.9, 0.3 + 1e-12]) == (1, 2, 1)


def test_win_tie_loss_for_a_loss_where_lower_is_better() -> None:
    tuned_loss = [1.2, 2.0, 3.5, 0.8]
    base_loss = [1.5, 2.0, 3.0, 1.6]
    assert win_tie_loss(tuned_loss, base_loss, higher_is_better=False) == (2, 1, 1)
    assert win_tie_loss(tuned_loss, base_loss, higher_is_better=True) == (1, 1, 2)


def test_paired_inputs_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same items"):
        win_tie_loss([1.0, 2.0], [1.0])


# --- the STAT object ------------------------------------------------------------------------------------------------


def test_stat_without_base_has_only_the_tuned_interval() -> None:
    result = stat([0.2, 0.4, 0.9, 0.5], None, seed=0, binary=False)
    assert set(result) == STAT_KEYS
    assert result["tuned"] == 0.5
    assert result["lower"] <= 0.5 <= result["upper"]


def test_stat_with_base_for_a_score_and_for_a_0_1_metric() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(120)
    tuned = np.clip(base + rng.normal(0.05, 0.1, 120), 0, 1)
    score = stat(tuned, base, seed=0, binary=False)
    assert set(score) == PAIRED_KEYS
    assert score["delta"] == pytest.approx(score["tuned"] - score["base"], abs=2e-6)
    assert score["delta_lower"] <= score["delta"] <= score["delta_upper"]
    assert score["wins"] + score["ties"] + score["losses"] == 120

    tuned01, base01 = _outcomes(40, 12, 3, 25)
    binary = stat(tuned01, base01, seed=0, binary=True)
    assert set(binary) == PAIRED_KEYS | {"mcnemar_p"}
    assert (binary["wins"], binary["ties"], binary["losses"]) == (12, 65, 3)
    assert binary["mcnemar_p"] == pytest.approx(mcnemar(tuned01, base01), rel=1e-5)


def test_stat_rounds_to_six_decimals_and_is_valid_json() -> None:
    values = np.random.default_rng(4).random(50)
    result = stat(values, values[::-1], seed=1, binary=False)
    for key in ("tuned", "lower", "upper", "base", "delta", "delta_lower", "delta_upper"):
        assert result[key] == round(result[key], 6)
    json.dumps(result, allow_nan=False)
    assert stat(values, values[::-1], seed=1, binary=False) == result


def test_stat_keeps_a_tiny_mcnemar_p_instead_of_rounding_it_to_zero() -> None:
    result = stat(*_outcomes(0, 200, 10, 0), seed=0, binary=True)
    assert 0 < result["mcnemar_p"] < 1e-6


def test_stat_for_a_loss_counts_a_lower_loss_as_a_win() -> None:
    result = stat([1.0, 1.1, 2.0], [1.5, 1.6, 1.9], seed=0, binary=False, higher_is_better=False)
    assert (result["wins"], result["ties"], result["losses"]) == (2, 0, 1)
    assert result["delta"] < 0


def test_stat_with_no_items_or_one_item_writes_null_intervals() -> None:
    empty = stat([], [], seed=0, binary=True)
    assert empty["tuned"] is None and empty["lower"] is None and empty["delta"] is None
    assert empty["mcnemar_p"] == 1.0 and (empty["wins"], empty["ties"], empty["losses"]) == (0, 0, 0)
    one = stat([0.8], [0.5], seed=0, binary=False)
    assert one["tuned"] == 0.8 and one["base"] == 0.5 and one["delta"] == pytest.approx(0.3)
    assert one["lower"] is None and one["upper"] is None and one["delta_lower"] is None
    json.dumps(empty, allow_nan=False)
    json.dumps(one, allow_nan=False)


def test_stat_leaves_out_missing_losses_pairwise() -> None:
    # `loss` is null for items a model could not score; those items drop out of both sides.
    result = stat([1.0, None, 3.0, 2.0], [2.0, 1.0, None, 4.0], seed=0, binary=False, higher_is_better=False)
    assert result["tuned"] == 1.5 and result["base"] == 3.0 and result["delta"] == -1.5
    assert (result["wins"], result["ties"], result["losses"]) == (2, 0, 0)
    all_missing = stat([None, None], None, seed=0, binary=False)
    assert all_missing == {"tuned": None, "lower": None, "upper": None}

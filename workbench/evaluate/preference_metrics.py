"""Preference evaluation on held-out pairs: the DPO implicit-reward accuracy of a policy and the accuracy of a reward
model, each with a bootstrap interval (`workbench.evaluate.compare`), and the tuned-vs-base win rate of the task
answers under a reward model with a paired interval.

- `pref.implicit_accuracy`: the share of pairs where the policy raises the chosen answer's log-probability, relative
  to the reference, more than the rejected one's: [log pi(c) - log ref(c)] > [log pi(r) - log ref(r)] (DPO's implicit
  reward, beta * that log-ratio, ranks them; beta does not change the sign). The reference is the run's own: its
  base with the adapter disabled, or the `init_from` adapter it started from. Ties count as wrong, as in TRL.
- `pref.reward_accuracy`: the share of pairs where the reward model scores chosen above rejected.
- `pref.reward_score`: the reward of the tuned model's task answers against the base model's answers to the same
  prompts (paired bootstrap of the difference; wins/ties/losses per prompt; `win_rate` = (wins + ties / 2) / n).

Prompts and answers are rendered exactly as in training (`preference_prepare`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import pairs as pdata
from workbench.errors import WbError
from workbench.evaluate import compare
from workbench.methods.registry import scores_only
from workbench.models import templates as tdata
from workbench.runfile.evals import Stat
from workbench.runfile.folder import RunFolder


@dataclass
class RewardScorer:
    """A trained reward run (method reward) loaded for scoring: text in, one scalar per text out."""

    model: Any
    tokenizer: Any
    template: tdata.Template
    batch_size: int = 8
    max_length: int = 1024

    @classmethod
    def load(cls, spec: Path, batch_size: int = 8, max_length: int | None = None) -> RewardScorer:
        """A reward run's model and tokenizer (`workbench.score.reward.load_reward_model`), with the run's template
        and max_length, which the texts are rendered and cut with as in training."""
        from workbench.models.targets import resolve_target
        from workbench.score.reward import load_reward_model

        target = resolve_target(spec)
        if target.run_dir is None or not scores_only(target.method):
            raise WbError(f"--reward-model {spec}: not a reward run (a run folder trained with method: reward)")
        rm = load_reward_model(str(target.run_dir))
        tokenizer = rm.tokenizer
        if rm.model.config.pad_token_id is None:
            rm.model.config.pad_token_id = tokenizer.eos_token_id
        template = tdata.choose_template(tokenizer, target.template)
        limit = max_length or _recipe_max_length(target.run_dir)
        return cls(rm.model, tokenizer, template, batch_size, limit)

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """The reward of each full text (prompt + answer), cut to the run's max_length as in training."""
        from workbench import precision
        from workbench.score.reward import score_token_ids

        encoded = [list(self.tokenizer(t)["input_ids"])[: self.max_length] for t in texts]
        choice = precision.for_model("auto", self.model)
        return score_token_ids(self.model, encoded, choice, self.batch_size)

    def score_pairs(self, pairs: Sequence[pdata.Pair]) -> tuple[list[float], list[float]]:
        chosen, rejected = [], []
        for p in pairs:
            prompt = tdata.render_prompt(self.tokenizer, self.template, p.prompt)
            chosen.append(prompt + tdata.completion_text(self.tokenizer, self.template, p.chosen))
            rejected.append(prompt + tdata.completion_text(self.tokenizer, self.template, p.rejected))
        return self.score_texts(chosen), self.score_texts(rejected)


def _recipe_max_length(run_dir: Path) -> int:
    return int(RunFolder(run_dir).recipe().get("max_length") or 1024)


def reference_adapter(run_dir: Path | None) -> Path | None:
    """The adapter a DPO-family run started from (its `preference.init_from`), which is its reference; else None."""
    if run_dir is None or not RunFolder(run_dir).recipe_path.is_file():
        return None
    pref = RunFolder(run_dir).recipe().get("preference") or {}
    init = pref.get("init_from")
    if not init or pref.get("reference") == "base":
        return None
    folder = Path(init) / "adapter" if (Path(init) / "adapter").is_dir() else Path(init)
    if not (folder / "adapter_config.json").is_file():
        raise WbError(f"{run_dir}: its init_from {init} has no adapter any more: the reference cannot be rebuilt")
    return folder


def implicit_rewards(
    loaded: Any, pairs: Sequence[pdata.Pair], reference: str | None, batch_size: int, max_length: int
) -> tuple[list[float], list[float]]:
    """Per pair, (log pi(c) - log ref(c)) and (log pi(r) - log ref(r)); `loaded`'s active adapter is the policy,
    `reference` the adapter name of the reference (None: all adapters disabled)."""
    from workbench import precision
    from workbench.models.loglik import Request, loglikelihoods

    tok, template = loaded.tokenizer, loaded.template
    requests: list[Request] = []
    for p in pairs:
        prompt = tdata.render_prompt(tok, template, p.prompt)
        requests.append(Request(prompt, tdata.completion_text(tok, template, p.chosen)))
        requests.append(Request(prompt, tdata.completion_text(tok, template, p.rejected)))
    policy_name = loaded.active
    choice = precision.for_model("auto", loaded.model)
    with choice.autocast():
        policy = loglikelihoods(loaded, requests, batch_size=batch_size, max_length=max_length)
        loaded.use(reference)
        try:
            ref = loglikelihoods(loaded, requests, batch_size=batch_size, max_length=max_length)
        finally:
            loaded.use(policy_name)
    ratios = [p[0] - r[0] for p, r in zip(policy, ref, strict=True)]
    return ratios[0::2], ratios[1::2]


def _accuracy(chosen: Sequence[float], rejected: Sequence[float], seed: int) -> tuple[Stat, Stat]:
    """Accuracy and mean margin with their intervals. When every pair has the same margin (a policy equal to its
    reference gives 0 on every pair) the scorer tells no pair's answers apart: both are marked `constant`, and a gate
    on them is inconclusive, as for a task metric on which both models score the same on every item."""
    correct = [1 if c > r else 0 for c, r in zip(chosen, rejected, strict=True)]
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    constant = {"constant": True} if len(set(margins)) == 1 else {}
    acc = Stat.model_validate(compare.stat(correct, None, seed, binary=True) | constant)
    margin = Stat.model_validate(compare.stat(margins, None, seed, binary=False) | constant)
    return acc, margin


def evaluate_pairs(
    loaded: Any,
    prefs: Path,
    reference: str | None,
    scorer: RewardScorer | None,
    seed: int,
    batch_size: int,
    max_length: int,
    with_policy: bool,
    warnings: list[str],
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The preference section of metrics.json (as a dict of Stats) and one row per scored pair. A pair whose chosen
    and rejected answers are the same text (surrounding whitespace aside) carries no preference: it is left out of
    every number, counted in `excluded_identical` and named in a warning."""
    pairs = pdata.load_pairs(prefs)
    same = [p.line for p in pairs if p.chosen.strip() == p.rejected.strip()]
    if same:
        left_out = set(same)
        shown = ", ".join(map(str, same[:10])) + (", ..." if len(same) > 10 else "")
        warnings.append(
            f"{prefs}: {len(same)} of {len(pairs)} pairs have the same chosen and rejected answer (lines {shown}): "
            "left out of the preference numbers, they carry no preference"
        )
        pairs = [p for p in pairs if p.line not in left_out]
    section: dict[str, Any] = {"n": len(pairs), "source": str(prefs), "excluded_identical": len(same)}
    rows: list[dict[str, Any]] = [{"line": p.line} for p in pairs]
    if not pairs:
        return section, rows  # nothing to score: every gate on these numbers is `missing`
    if with_policy:
        chosen, rejected = implicit_rewards(loaded, pairs, reference, batch_size, max_length)
        section["implicit_accuracy"], section["implicit_margin"] = _accuracy(chosen, rejected, seed)
        for row, c, r in zip(rows, chosen, rejected, strict=True):
            row["implicit"] = {"chosen": round(c, 5), "rejected": round(r, 5)}
    if scorer is not None:
        chosen, rejected = scorer.score_pairs(pairs)
        section["reward_accuracy"], section["reward_margin"] = _accuracy(chosen, rejected, seed)
        for row, c, r in zip(rows, chosen, rejected, strict=True):
            row["reward"] = {"chosen": round(c, 5), "rejected": round(r, 5)}
    return section, rows


def win_rate(
    scorer: RewardScorer, items: Sequence[Any], tuned: Sequence[str], base: Sequence[str], seed: int
) -> dict[str, Any]:
    """Tuned vs base answers to the same task items under the reward model: a paired Stat and the win rate."""
    prompts = [
        tdata.prompt_text(
            scorer.tokenizer,
            scorer.template,
            {
                "system": it.system,
                "history": it.history,
                "instruction": it.instruction,
                "input": it.input,
                "output": "",
            },
        )
        for it in items
    ]

    def texts(answers: Sequence[str]) -> list[str]:
        return [
            p + tdata.completion_text(scorer.tokenizer, scorer.template, a)
            for p, a in zip(prompts, answers, strict=True)
        ]

    tuned_scores, base_scores = scorer.score_texts(texts(tuned)), scorer.score_texts(texts(base))
    stat = Stat.model_validate(compare.stat(tuned_scores, base_scores, seed, binary=False))
    n = len(tuned_scores)
    rate = ((stat.wins or 0) + (stat.ties or 0) / 2) / n if n else None
    return {"reward_score": stat, "win_rate": round(rate, 6) if rate is not None else None}

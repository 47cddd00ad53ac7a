"""`wb eval`: generation, text-overlap metrics, forgetting probes, base-vs-tuned comparison with bootstrap intervals.

One evaluation, in the order it runs: `pipeline` (the entry points) → `sets` (the sets to score, from the task file,
probes, multiple-choice files or a predictions file) → `model_runs` (the models answer; preference pairs; training
overlap) → `judging` (the pairwise judge, human review) → `scoring` (per-item scores and their aggregates) with
`notes` (the warnings) → `writing` (metrics.json, scores.jsonl and the manifest, as one output set).

What they use: `suite` and `config` (how answers are judged; the options), `scorers`, `answers`, `metrics`, `loglik`
and `mc` (per-item scores; the metrics themselves are registered in `workbench.metric_specs`), `degenerate` (the
checks of `workbench.degenerate_kinds`), `compare` (bootstrap, paired intervals, McNemar), `forgetting` (probe sets),
`judge` and `review` (verdicts), `preference_metrics` (held-out pairs).
"""

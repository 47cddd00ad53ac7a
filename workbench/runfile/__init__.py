"""The run schema and the run folder: pydantic models of every file a run holds, and the one object that opens them.

Writers (`wb eval`, `wb train`) build these models and dump them; readers (`workbench.report`) validate what they
load against them, so a number in a run file is a real number: strict types (no string, no bool where a number
belongs) and finite (NaN and infinity are refused with the file and the field). The JSON Schemas in `schemas/` are
generated from these models, and the gate's valid paths are derived by walking `RunSummary`, so a new metric or a
new summary number needs no change in the gate.

Modules (docs/run-folder.md describes the files in words):
- `values`: the shared number types (`Number`, `Count`, `Fraction`, ...) and model bases.
- `evals`: `eval/metrics.json` (`EvalMetrics`, a `SetMetrics` per set) and `eval/scores.jsonl` (`ScoreRow`).
- `training`: a training run's `manifest.json` (`TrainManifest`: its known numbers typed, other keys kept) and
  `trainer_log.jsonl` (`LogRow`).
- `cleaning`: `<stem>.stats.json` of `wb clean` (`CleanStats`: the accounting typed, the rest kept).
- `summary`: `RunSummary`, whose dotted paths are the gate's paths. Sections `task` and `forgetting.<set>` are
  `SetMetrics`; their metrics are addressed without the `metrics` level (`task.rouge_l.tuned`, not
  `task.metrics.rouge_l.tuned`), as the gate files have always written them.
- `gate_paths`: those paths, derived from `RunSummary` (`gate_path_problem`, `gate_paths_help`, `resolve`).
- `folder`: `RunFolder` / `EvalFolder`, the only code that names and opens a run folder's files.

This `__init__` imports nothing: importing one of these modules runs no other.
"""

"""`wb score` as a library function: read records, score them with a causal LM (and a reward model), write the
records with a `scores` object beside each, a stats file (distributions per score) and a manifest.

Outputs are one set (`OutputSet`): `<out>` (every record, in input order, with `scores`), `<out stem>.stats.json`
and last `<out stem>.manifest.json`. Scores are cached (`ScoreCache`): re-scoring a file, or a file that shares
records with one scored before, computes only the new records.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from workbench import score_specs
from workbench.errors import WbError
from workbench.io.jsontext import dumps_json, jsonl_line
from workbench.io.options import default_output
from workbench.manifest import build_manifest
from workbench.output import OutputSet, sha256_file
from workbench.records import EXTRA, with_extra
from workbench.score.summary import ScorePaths, summarise_all

ProgressFn = Callable[[str, int, int], None]
REWARD = "reward"


@dataclass
class ScoreResult:
    paths: ScorePaths
    stats: dict[str, Any]
    cache_hits: int
    cache_misses: int


def _cached(
    cache: Any,
    model_id: dict[str, Any],
    settings: dict[str, Any],
    records: list[dict[str, Any]],
    compute: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
) -> list[dict[str, Any]]:
    """`compute` once per distinct record the cache does not hold; the rest from the cache; all in order."""
    if cache is None:
        return compute(records)
    keys = [cache.key(model_id, r, settings) for r in records]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each distinct record once
    found = cache.get_many(list(first))
    todo = [first[k] for k in first if k not in found]
    if todo:
        fresh = compute([records[i] for i in todo])
        new = {keys[i]: v for i, v in zip(todo, fresh, strict=True)}
        cache.put_many(new)
        found.update(new)
    return [found[k] for k in keys]


def score_file(
    input_path: Path,
    output: Path | None,
    model: str = "embedded",
    reward_model: str | None = None,
    batch_size: int = 8,
    max_length: int = 1024,
    precision: str = "auto",
    use_cache: bool = True,
    progress: ProgressFn | None = None,
    on_status: Callable[[str], None] | None = None,
    extra_fields: bool = True,
) -> ScoreResult:
    """Score every record of `input_path` into `output` (default `./<name>.scored.jsonl`; see the module docstring).
    `extra_fields`: each record's fields wb does not use are written after its `scores` (`records.with_extra`)."""
    from workbench.io.reader import read_records
    from workbench.models.generate import GenerationCache
    from workbench.models.targets import load, resolve_target
    from workbench.precision import for_model
    from workbench.score.cache import ScoreCache
    from workbench.score.lm import lm_scores

    started = time.time()
    output = output if output is not None else default_output(input_path, "scored")
    paths = ScorePaths.for_output(Path(output))
    if Path(input_path).resolve() == paths.scored.resolve():
        raise WbError(f"{output}: output would overwrite the input file; choose another -o")
    rows = read_records(Path(input_path), extra_fields=extra_fields)
    own = [r.pop(EXTRA, None) for _, r in rows]  # written back after the scores; not part of the cache key
    records = [r for _, r in rows if "messages" not in r]
    conversations = sum(1 for _, r in rows if "messages" in r)
    loaded = load([resolve_target(model)], on_status=on_status)
    choice = for_model(precision, loaded.model)
    if on_status is not None:
        on_status(f"precision {choice.name} ({choice.reason})")
    identities = GenerationCache() if use_cache else None
    cache = ScoreCache() if use_cache else None
    chat = str(getattr(loaded.tokenizer, "chat_template", None) or "")
    settings = {
        "kind": "lm",
        "template": loaded.template,
        "chat_template": hashlib.sha256(chat.encode()).hexdigest(),
        "max_length": max_length,
        "precision": choice.name,
    }
    model_id = asdict(identities.identity(loaded)) if identities is not None else {}

    def lm_progress(done: int, total: int) -> None:
        if progress is not None:
            progress("scoring with the model", done, total)

    lm = _cached(
        cache,
        model_id,
        settings,
        records,
        lambda todo: lm_scores(loaded, todo, choice, max_length, batch_size, lm_progress),
    )
    rewards: list[float | None] = [None] * len(records)
    if reward_model is not None:
        from workbench.score.reward import load_reward_model, reward_scores

        rm = load_reward_model(reward_model)
        rm_choice = for_model(precision, rm.model)
        rm_id = rm.identity(identities.file_hash) if identities is not None else {}
        rm_settings = {"kind": "reward", "max_length": max_length, "precision": rm_choice.name}

        def rm_compute(todo: list[dict[str, Any]]) -> list[dict[str, Any]]:
            def rm_progress(done: int, total: int) -> None:
                if progress is not None:
                    progress("scoring with the reward model", done, total)

            values = reward_scores(rm, todo, rm_choice, max_length, batch_size, rm_progress)
            return [{REWARD: v} for v in values]

        rewards = [row[REWARD] for row in _cached(cache, rm_id, rm_settings, records, rm_compute)]
    names = [*score_specs.names("lm"), *((REWARD,) if reward_model is not None else ())]
    scored_rows = []
    for scores, reward in zip(lm, rewards, strict=True):
        row = dict(scores)
        if reward_model is not None:
            row[REWARD] = reward
        scored_rows.append(row)
    stats = {
        "input": {"path": str(input_path), "sha256": sha256_file(Path(input_path))},
        "model": model,
        "reward_model": reward_model,
        "records": len(rows),
        "scored": len(records),
        "not_scored_tool_conversations": conversations,
        "truncated": sum(1 for s in lm if s.get("truncated")),
        "precision": choice.record(),
        "settings": {"max_length": max_length, "batch_size": batch_size, "template": loaded.template},
        "ifd_definition": "loss(answer | prompt) / loss(answer | empty prompt), mean token losses, same template",
        "scores": summarise_all(scored_rows, names),
        "cache": {"hits": cache.hits, "misses": cache.misses} if cache is not None else None,
    }
    by_record = iter(scored_rows)
    with OutputSet([paths.scored, paths.stats], manifest=paths.manifest) as outputs:
        f = outputs.open(paths.scored)
        for (_, rec), extra in zip(rows, own, strict=True):
            if "messages" in rec:  # a tool conversation: its own fields are its keys after messages and tools
                conv = {"messages": rec["messages"], "tools": rec["tools"], "scores": None}
                own_keys = {k: v for k, v in rec.items() if k not in ("messages", "tools")}
                f.write(jsonl_line(with_extra(conv, own_keys)))
            else:
                f.write(jsonl_line(with_extra({**rec, "scores": next(by_record)}, extra)))
        outputs.write(paths.stats, dumps_json(stats))
        manifest = build_manifest(
            command="score",
            started=started,
            inputs={"data": Path(input_path)},
            outputs={"scored": outputs.entry(paths.scored), "stats": outputs.entry(paths.stats)},
            config={
                "model": model,
                "reward_model": reward_model,
                "max_length": max_length,
                "batch_size": batch_size,
                "template": loaded.template,
                **choice.record(),
                "extra_fields": "keep" if extra_fields else "drop",
            },
        )
        outputs.publish(manifest)
    return ScoreResult(paths, stats, cache.hits if cache else 0, cache.misses if cache else 0)

"""Record lengths in a model's own tokens, after its chat template: what `max_length` a fine-tune needs.

Each record is rendered and tokenised exactly as `wb train` does (`workbench.models.templates.encode`, no
truncation), so the lengths are the sequence lengths training will see. The summary holds percentiles, the share of
records longer than each candidate `max_length`, the smallest length covering 99 % of the records (nearest rank) and
a suggested `max_length` (that length rounded up to a multiple of 64), plus the points of the cumulative
distribution for a chart (`stats_page.cdf_chart`). transformers is imported only here, when `wb stats --tokenizer`
asks for it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from workbench.io.reader import RecordReader
from workbench.records import FIELDS

MAX_LENGTHS = (256, 512, 1024, 2048, 4096, 8192)
COVERAGE = 0.99
ROUND_TO = 64
CDF_POINTS = 200


def nearest_rank(sorted_values: list[int], q: float) -> int:
    """The smallest value with at least a share `q` of the values at or below it."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def summarize(lengths: list[int], max_lengths: tuple[int, ...] = MAX_LENGTHS) -> dict[str, Any]:
    """Percentiles, share over each max_length, the 99 % length and the suggested max_length, CDF points."""
    values = sorted(lengths)
    n = len(values)
    if n == 0:
        return {"records": 0, "over": {}, "covering_99": None, "suggested_max_length": None, "cdf": []}
    covering = nearest_rank(values, COVERAGE)
    step = max(1, n // CDF_POINTS)
    cdf = [[values[i], round((i + 1) / n, 6)] for i in range(step - 1, n, step)]
    if cdf[-1][0] != values[-1] or cdf[-1][1] != 1.0:
        cdf.append([values[-1], 1.0])
    return {
        "records": n,
        "min": values[0],
        "p50": nearest_rank(values, 0.5),
        "p90": nearest_rank(values, 0.9),
        "p99": covering,
        "max": values[-1],
        "mean": round(sum(values) / n, 1),
        "over": {str(m): round(sum(1 for v in values if v > m) / n, 6) for m in max_lengths},
        "covering_99": covering,
        "suggested_max_length": -(-covering // ROUND_TO) * ROUND_TO,
        "cdf": cdf,
    }


def token_lengths(
    path: Path,
    tokenizer_spec: str,
    overrides: dict[str, str] | None = None,
    split: str | None = None,
    template: str = "auto",
    max_lengths: tuple[int, ...] = MAX_LENGTHS,
) -> dict[str, Any]:
    """Lengths of every valid record of `path` in the tokens of `tokenizer_spec` (a model spec as for `wb train`)."""
    from workbench.models import templates as tdata
    from workbench.models.base import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_spec)
    used = tdata.choose_template(tokenizer, template)
    lengths: list[int] = []
    trained = 0  # tokens with a trained label (the response, unless train_on all)
    tools = used == "chat" and tdata.supports_tools(tokenizer)
    skipped = 0  # tool-calling conversations the template cannot render
    for batch in RecordReader(Path(path), overrides, split=split):
        records = [dict(zip(FIELDS, row, strict=True)) for row in batch.rows]
        skipped += 0 if tools else len(batch.conversations)
        records += [conv for _, conv in batch.conversations] if tools else []
        for record in records:
            encoded = tdata.encode(tokenizer, record, used, 1 << 62, "responses")
            lengths.append(len(encoded.input_ids))
            trained += encoded.trained_tokens
    return {
        "tokenizer": tokenizer_spec,
        "template": template,
        "rendered_with": used,
        "skipped_tool_conversations": skipped,
        "tokens_total": sum(lengths),
        "trained_tokens_total": trained,
        **summarize(lengths, max_lengths),
    }

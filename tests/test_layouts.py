"""Dataset folders as people download them: `save_to_disk` folders and hub snapshots, read like the JSON source."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from workbench.clean.dispatch import run
from workbench.clean.profile import load
from workbench.errors import WbError
from workbench.io.reader import RecordReader, read_records
from workbench.stats import describe, validate

ZH_TERMS = Path(__file__).resolve().parent / "data" / "zh_term_explanations.json"


def source_records() -> list[dict[str, Any]]:
    return json.loads(ZH_TERMS.read_text(encoding="utf-8"))


def save_to_disk(folder: Path, records: list[dict[str, Any]], shards: int = 1, split: str | None = "train") -> Path:
    """The files `datasets.Dataset.save_to_disk` writes: Arrow IPC stream shards, state.json, dataset_info.json."""
    folder.mkdir(parents=True)
    names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    size = -(-len(records) // shards)
    for i, name in enumerate(names):
        pl.DataFrame(records[i * size : (i + 1) * size]).write_ipc_stream(folder / name)
    state = {
        "_data_files": [{"filename": n} for n in names],
        "_fingerprint": "0123456789abcdef",
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (folder / "state.json").write_text(json.dumps(state, indent=2), encoding="utf-8")
    features = {k: {"dtype": "string", "_type": "Value"} for k in records[0]}
    (folder / "dataset_info.json").write_text(json.dumps({"features": features}), encoding="utf-8")
    return folder


def save_dict_to_disk(folder: Path, splits: dict[str, list[dict[str, Any]]]) -> Path:
    folder.mkdir(parents=True)
    for name, recs in splits.items():
        save_to_disk(folder / name, recs, split=name)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}), encoding="utf-8")
    return folder


def hub_snapshot(folder: Path, splits: dict[str, list[dict[str, Any]]], card: bool, shards: int = 2) -> Path:
    """`data/<split>-0000i-of-0000N.parquet`, and the README card's `configs` when `card`."""
    (folder / "data").mkdir(parents=True)
    (folder / ".cache").mkdir()
    (folder / ".cache" / "stale.parquet").write_bytes(b"not data")
    for name, recs in splits.items():
        n = shards if name == "train" else 1
        size = -(-len(recs) // n)
        for i in range(n):
            pl.DataFrame(recs[i * size : (i + 1) * size]).write_parquet(
                folder / "data" / f"{name}-{i:05d}-of-{n:05d}.parquet"
            )
    if card:
        entries = "".join(f"  - split: {name}\n    path: data/{name}-*\n" for name in splits)
        header = f"---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n{entries}---\n"
        (folder / "README.md").write_text(header + "# A dataset card\n", encoding="utf-8")
    return folder


def rows(path: Path, split: str | None = None) -> list[tuple[int, tuple[Any, ...]]]:
    reader = RecordReader(path, split=split)
    return [(line, row) for batch in reader for line, row in zip(batch.lines, batch.rows, strict=True)]


def test_both_layouts_read_the_same_records_as_the_json_source(tmp_path: Path) -> None:
    recs = source_records()
    want = rows(ZH_TERMS)
    assert len(want) == 152
    assert rows(save_to_disk(tmp_path / "saved", recs, shards=3)) == want
    assert rows(save_dict_to_disk(tmp_path / "dict", {"train": recs, "test": recs[:5]})) == want
    assert rows(hub_snapshot(tmp_path / "hub", {"train": recs, "test": recs[:5]}, card=True)) == want
    assert rows(hub_snapshot(tmp_path / "bare", {"train": recs, "test": recs[:5]}, card=False)) == want


def test_split_picks_the_split_and_positions_count_on_across_shards(tmp_path: Path) -> None:
    recs = source_records()
    hub = hub_snapshot(tmp_path / "hub", {"train": recs[:100], "validation": recs[100:110], "test": recs[110:]}, True)
    test_rows = rows(hub, "test")
    assert [r[1][0] for r in test_rows] == [r["instruction"] for r in recs[110:]]
    assert [r[0] for r in test_rows] == list(range(1, 43))
    saved = save_dict_to_disk(tmp_path / "dict", {"train": recs[:100], "test": recs[100:]})
    assert [r[0] for r in rows(saved, "test")] == list(range(1, 53))
    assert RecordReader(saved, split="test").dataset.describe() == "save_to_disk folder, split test (1 file)"


def test_clean_of_a_dataset_folder_writes_what_clean_of_the_json_source_writes(tmp_path: Path) -> None:
    recs = source_records()
    a = run(ZH_TERMS, tmp_path / "a" / "clean.jsonl", load("default"))
    folder = save_to_disk(tmp_path / "saved", recs, shards=4)
    b = run(folder, tmp_path / "b" / "clean.jsonl", load("default"))
    for name in ("clean.jsonl", "clean.dropped.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (a.summary["read"], a.summary["kept"]) == (b.summary["read"], b.summary["kept"])
    assert b.summary["input"]["split"] == "train" and b.summary["input"]["layout"] == "save_to_disk"
    assert len(b.summary["input"]["sha256"]) == 64


def test_cli_commands_take_a_folder_and_split(tmp_path: Path, wb: Any) -> None:
    recs = source_records()
    hub = hub_snapshot(tmp_path / "hub", {"train": recs[:100], "test": recs[100:]}, card=False)
    res = wb("clean", hub, "--split", "test", "-o", tmp_path / "c.jsonl")
    assert res.exit_code == 0, res.output
    assert "hub folder, split test" in " ".join(res.output.split())
    assert json.loads((tmp_path / "c.stats.json").read_text(encoding="utf-8"))["read"] == 52
    assert wb("validate", hub, "--split", "test").exit_code == 0
    assert json.loads(wb("stats", hub, "--split", "test", "--json").stdout)["records"] == 52
    assert describe(hub)["records"] == 100 and validate(hub, split="test").records == 52


def test_train_and_eval_read_their_default_split(tmp_path: Path) -> None:
    recs = source_records()
    saved = save_dict_to_disk(tmp_path / "dict", {"train": recs[:100], "validation": recs[100:120], "test": recs[120:]})
    assert len(read_records(saved)) == 100  # wb train --data: train by default
    assert len(read_records(saved, "validation")) == 20
    assert len(read_records(saved, prefer=("test", "validation"))) == 32  # wb eval --data: test by default


@pytest.mark.parametrize(
    ("make", "split", "message"),
    [
        (
            lambda p: save_dict_to_disk(p, {"test": [{"instruction": "a", "output": "b"}]}),
            "train",
            "no split 'train'; splits are test",
        ),
        (
            lambda p: save_dict_to_disk(
                p, {"test": [{"instruction": "a", "output": "b"}], "dev": [{"instruction": "a", "output": "b"}]}
            ),
            None,
            "has splits test, dev; pick one with --split",
        ),
        (lambda p: p.mkdir() or p, None, "is a directory but not a dataset folder"),
    ],
)
def test_folder_problems_are_one_line_errors(tmp_path: Path, make: Any, split: str | None, message: str) -> None:
    folder = make(tmp_path / "ds")
    with pytest.raises(WbError, match=message):
        RecordReader(folder, split=split)


def test_broken_save_to_disk_state_and_split_on_a_file_are_one_line_errors(tmp_path: Path, wb: Any) -> None:
    folder = save_to_disk(tmp_path / "saved", source_records()[:3])
    (folder / "data-00000-of-00001.arrow").unlink()
    res = wb("stats", folder)
    assert res.exit_code == 2
    assert "state.json: _data_files[0]: 'data-00000-of-00001.arrow' is not a file in the folder" in res.stderr
    res = wb("stats", ZH_TERMS, "--split", "test")
    assert res.exit_code == 2 and "this is a single file" in res.stderr


def test_a_single_arrow_file_reads_like_parquet(tmp_path: Path) -> None:
    recs = source_records()[:4]
    pl.DataFrame(recs).write_ipc_stream(tmp_path / "d.arrow")
    pl.DataFrame(recs).write_ipc(tmp_path / "f.arrow")
    assert [r[1][0] for r in rows(tmp_path / "d.arrow")] == [r["instruction"] for r in recs]
    assert rows(tmp_path / "f.arrow") == rows(tmp_path / "d.arrow")


def test_a_folder_of_unrelated_files_is_not_read_as_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "notes.jsonl").write_text('{"instruction": "a", "output": "b"}\n', encoding="utf-8")
    (tmp_path / "other.json").write_text("[]", encoding="utf-8")
    with pytest.raises(WbError, match="is a directory but not a dataset folder"):
        RecordReader(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"instruction": "c", "output": "d"}\n', encoding="utf-8")
    assert [r[1][0] for r in rows(tmp_path)] == ["c"]  # a split-named file makes it a hub-style folder


def _with_secret(tmp_path: Path) -> Path:
    """A file outside the dataset folder whose text must never be read into wb's outputs."""
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"password": "hunter2-秘密"}\n', encoding="utf-8")
    return secret


@pytest.mark.parametrize("shard", ["../secret.jsonl", "ABSOLUTE", "symlink"])
def test_a_saved_folder_naming_a_shard_outside_itself_is_refused(tmp_path: Path, wb: Any, shard: str) -> None:
    secret = _with_secret(tmp_path)
    folder = save_to_disk(tmp_path / "saved", source_records()[:3])
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    if shard == "ABSOLUTE":
        shard = str(secret)
    elif shard == "symlink":  # a shard inside the folder, a link pointing out of it
        shard = "data-00001-of-00002.arrow"
        (folder / shard).symlink_to(secret)
    state["_data_files"].append({"filename": shard})
    (folder / "state.json").write_text(json.dumps(state), encoding="utf-8")
    res = wb("clean", folder, "-o", tmp_path / "out" / "clean.jsonl")
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {folder / 'state.json'}: _data_files[1]: {shard!r} resolves outside the dataset folder {folder}; "
        "refused (a dataset folder reads only its own files)"
    ]
    assert not (tmp_path / "out").exists()  # refused before any output (or the secret in a rejects file)


def test_a_hub_folder_with_a_file_outside_itself_is_refused(tmp_path: Path, wb: Any) -> None:
    recs = source_records()[:4]
    outside = tmp_path / "outside.parquet"
    pl.DataFrame([{"instruction": "秘密", "output": "hunter2"}]).write_parquet(outside)
    folder = hub_snapshot(tmp_path / "hub", {"train": recs}, card=False)
    (folder / "data" / "train-00002-of-00002.parquet").symlink_to(outside)
    res = wb("stats", folder)
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {folder}: split train: {folder / 'data' / 'train-00002-of-00002.parquet'} resolves outside the "
        "dataset folder; refused (a dataset folder reads only its own files)"
    ]
    (folder / "data" / "train-00002-of-00002.parquet").unlink()
    card = "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: ../outside.parquet\n---\n"
    (folder / "README.md").write_text(card, encoding="utf-8")
    with pytest.raises(WbError, match=r"split train: .*outside.parquet resolves outside the dataset folder"):
        RecordReader(folder)


def test_a_saved_folder_with_no_shard_is_a_one_line_error(tmp_path: Path, wb: Any) -> None:
    folder = save_to_disk(tmp_path / "saved", source_records()[:3])
    (folder / "state.json").write_text(json.dumps({"_data_files": []}), encoding="utf-8")
    for command in ("clean", "stats"):
        args = ("-o", tmp_path / "clean.jsonl") if command == "clean" else ()
        res = wb(command, folder, *args)
        assert res.exit_code == 2
        assert res.stderr.strip().splitlines() == [
            f"error: {folder / 'state.json'}: _data_files: empty; the folder names no Arrow file to read"
        ]

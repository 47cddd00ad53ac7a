"""Dataset folders as people download them, resolved to the data files of one split.

Two layouts, read without the `datasets` package:

- a folder written by `datasets.Dataset.save_to_disk`: `state.json` (its `_data_files` name the Arrow IPC stream
  shards, `data-00000-of-0000N.arrow`) and `dataset_info.json`; `DatasetDict.save_to_disk` writes
  `dataset_dict.json` (`{"splits": [...]}`) and one such folder per split;
- a Hugging Face hub snapshot: data files such as `data/train-00000-of-00002.parquet` (Parquet, JSON Lines, JSON,
  CSV or Arrow), with an optional README card whose YAML header lists `configs` → `data_files` → `split` / `path`
  (globs). Without a card the split is read from the file or folder name (`train`, `test`, `validation`, ...), as
  the hub does; files under `data/` that name no split are the train split, other files are not read.

A split is picked with `split`; without one, the only split, else the first of `prefer` the folder has.
A folder reads only its own files: a data file that resolves outside it (`../x`, an absolute path in
`state.json`, a card glob reaching up, a symlink pointing out) is refused, so a downloaded folder cannot make wb
read, and copy into its outputs, a file elsewhere on the machine.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from workbench.errors import WbError
from workbench.io.formats import SHARD_SUFFIXES

Layout = Literal["save_to_disk", "hub"]

DATA_SUFFIXES = (".jsonl", ".ndjson", ".json", *SHARD_SUFFIXES)
COMPRESSED = ("", ".gz", ".zst")
# Split names the hub recognises in file and folder names, and the canonical split they stand for.
SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
}
_SPLIT_IN_NAME = re.compile(
    r"(?:^|[-_./])(" + "|".join(sorted(SPLIT_WORDS, key=len, reverse=True)) + r")(?=$|[-_./\d])"
)


@dataclass(frozen=True)
class DatasetSplit:
    root: Path
    layout: Layout
    split: str
    splits: tuple[str, ...]
    files: tuple[Path, ...]

    def describe(self) -> str:
        return f"{self.layout} folder, split {self.split} ({len(self.files)} file{'s' * (len(self.files) != 1)})"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise WbError(f"{path}: cannot read ({err})") from None


def _pick(root: Path, splits: list[str], split: str | None, prefer: tuple[str, ...]) -> str:
    if not splits:
        raise WbError(
            f"{root}: is a directory but not a dataset folder: no state.json or dataset_dict.json (save_to_disk), "
            "no README configs and no data files named for a split such as data/train-00000-of-00001.parquet"
        )
    if split is not None:
        if split not in splits:
            raise WbError(f"{root}: no split {split!r}; splits are {', '.join(splits)}")
        return split
    if len(splits) == 1:
        return splits[0]
    for name in prefer:
        if name in splits:
            return name
    raise WbError(f"{root}: has splits {', '.join(splits)}; pick one with --split")


def _saved_dataset(folder: Path) -> tuple[Path, ...]:
    state = _read_json(folder / "state.json")
    if not isinstance(state, dict) or not isinstance(state.get("_data_files"), list):
        raise WbError(f"{folder / 'state.json'}: _data_files: expected a list of Arrow files")
    if state.get("_indices_data_files"):
        raise WbError(
            f"{folder}: the dataset was saved with an indices mapping; save it again after .flatten_indices()"
        )
    if not state["_data_files"]:
        raise WbError(f"{folder / 'state.json'}: _data_files: empty; the folder names no Arrow file to read")
    files = []
    for i, entry in enumerate(state["_data_files"]):
        name = entry.get("filename") if isinstance(entry, dict) else None
        if not isinstance(name, str) or not (folder / name).is_file():
            raise WbError(f"{folder / 'state.json'}: _data_files[{i}]: {name!r} is not a file in the folder")
        if not _inside(folder, folder / name):
            raise WbError(
                f"{folder / 'state.json'}: _data_files[{i}]: {name!r} resolves outside the dataset folder {folder}; "
                "refused (a dataset folder reads only its own files)"
            )
        files.append(folder / name)
    return tuple(files)


def _inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink and `..` resolved, lies in the folder `root` (also resolved)."""
    return path.resolve().is_relative_to(root.resolve())


def _save_to_disk(root: Path, split: str | None, prefer: tuple[str, ...]) -> DatasetSplit:
    if (root / "dataset_dict.json").is_file():
        info = _read_json(root / "dataset_dict.json")
        splits = info.get("splits") if isinstance(info, dict) else None
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise WbError(f"{root / 'dataset_dict.json'}: splits: expected a list of split names")
        chosen = _pick(root, splits, split, prefer)
        return DatasetSplit(root, "save_to_disk", chosen, tuple(splits), _saved_dataset(root / chosen))
    state = _read_json(root / "state.json")
    own = state.get("_split") if isinstance(state, dict) else None
    name = own if isinstance(own, str) and own else "train"
    chosen = _pick(root, [name], split, prefer)
    return DatasetSplit(root, "save_to_disk", chosen, (name,), _saved_dataset(root))


def _is_data_file(path: Path) -> bool:
    name = path.name.lower()
    return path.is_file() and any(name.endswith(s + c) for s in DATA_SUFFIXES for c in COMPRESSED)


def _data_files(root: Path) -> list[Path]:
    """Data files under `root`, hidden folders (`.git`, `.cache`) left out, in path order."""
    return sorted(
        p
        for p in root.rglob("*")
        if _is_data_file(p) and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _card_configs(root: Path) -> list[dict[str, Any]]:
    card = root / "README.md"
    if not card.is_file():
        return []
    text = card.read_text(encoding="utf-8", errors="replace").lstrip("\ufeff")
    match = re.match(r"---\r?\n(.*?)\r?\n---\r?\n", text, re.DOTALL)
    if not match:
        return []
    try:
        header = yaml.safe_load(match.group(1))
    except yaml.YAMLError as err:
        raise WbError(f"{card}: the YAML header is not valid YAML ({err})") from None
    configs = header.get("configs") if isinstance(header, dict) else None
    return [c for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []


def _card_splits(root: Path, config: dict[str, Any]) -> dict[str, list[Path]]:
    data_files = config.get("data_files")
    entries: list[tuple[str, list[str]]] = []
    if isinstance(data_files, str | list) and not (
        isinstance(data_files, list) and data_files and isinstance(data_files[0], dict)
    ):
        entries.append(("train", [data_files] if isinstance(data_files, str) else [str(p) for p in data_files]))
    elif isinstance(data_files, list):
        for entry in data_files:
            if isinstance(entry, dict) and isinstance(entry.get("split"), str):
                paths = entry.get("path")
                entries.append((entry["split"], [paths] if isinstance(paths, str) else [str(p) for p in paths or []]))
    elif isinstance(data_files, dict):
        for name, paths in data_files.items():
            entries.append((str(name), [paths] if isinstance(paths, str) else [str(p) for p in paths or []]))
    out: dict[str, list[Path]] = {}
    for name, patterns in entries:
        files = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
        if not files:
            raise WbError(f"{root / 'README.md'}: configs: split {name}: no file matches {', '.join(patterns)}")
        out[name] = files
    return out


def _split_of(root: Path, path: Path) -> str:
    rel = path.relative_to(root).as_posix().lower()
    found = _SPLIT_IN_NAME.findall(rel)
    return SPLIT_WORDS[found[-1]] if found else "train"


def _hub(root: Path, split: str | None, prefer: tuple[str, ...]) -> DatasetSplit:
    configs = _card_configs(root)
    if configs:
        config = next((c for c in configs if c.get("default")), None) or next(
            (c for c in configs if c.get("config_name") == "default"), configs[0]
        )
        by_split = _card_splits(root, config)
    else:
        by_split = {}
        for path in _data_files(root):
            # Only files the hub's conventions name: a split word in the path, or under data/. A folder of
            # unrelated files is not read as one dataset.
            rel = path.relative_to(root)
            if _SPLIT_IN_NAME.search(rel.as_posix().lower()) or rel.parts[0] == "data":
                by_split.setdefault(_split_of(root, path), []).append(path)
    order = ["train", "validation", "test"]
    splits = sorted(by_split, key=lambda s: (order.index(s) if s in order else len(order), s))
    chosen = _pick(root, splits, split, prefer)
    return DatasetSplit(root, "hub", chosen, tuple(splits), tuple(by_split[chosen]))


def resolve(root: Path, split: str | None = None, prefer: tuple[str, ...] = ("train",)) -> DatasetSplit:
    """The data files of one split of the dataset folder `root`."""
    root = Path(root)
    if (root / "state.json").is_file() or (root / "dataset_dict.json").is_file():
        found = _save_to_disk(root, split, prefer)
    else:
        found = _hub(root, split, prefer)
    for path in found.files:  # a split folder, a card's glob or a symlinked shard may point anywhere
        if not _inside(root, path):
            raise WbError(
                f"{root}: split {found.split}: {path} resolves outside the dataset folder; refused "
                "(a dataset folder reads only its own files)"
            )
    return found

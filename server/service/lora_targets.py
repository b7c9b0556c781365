"""`lora.target_modules` checked at job creation against the base model's module names, so a
typo is a 400 now rather than an `internal_error` after the job waited in the queue.

The API process never imports torch, so the names come from the model's files:

1. the model directory is available locally (a configured local path, or the worker's cache
   `model_cache_dir/<name>/` where the embedded model is converted and S3 models are
   downloaded): the tensor names in the safetensors headers (8-byte little-endian length +
   JSON, read directly; only the header is read). A module is a tensor name without its last
   component, for tensors of two or more dimensions: what PEFT's LoRA can wrap (Linear,
   Embedding, Conv). `lm_head` is always added: with tied embeddings it has no tensor of its
   own but is still a Linear module PEFT can target.
2. no weights readable, but the model is of a family whose module names are known (its
   `config.json` `model_type`, or the embedded default, a LLaMA model): the LLaMA-style names.
3. otherwise (an S3 model not yet downloaded, an unknown architecture, `.bin`-only weights):
   only the shape of the list is checked. The check must never refuse a name the real model
   has, so when in doubt it accepts and leaves the last word to PEFT at training time.

A name matches the way PEFT matches a list entry: the module's full dotted name equals it or
ends with `.` + it. Layer numbers in the known-family names are wildcards.
"""

from __future__ import annotations

import asyncio
import json
import re
import struct
from functools import lru_cache
from pathlib import Path

from tuneforge.domain import TARGET_MODULE_PATTERN, LoraConfig
from tuneforge.errors import invalid
from tuneforge.settings import Settings

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"  # tuneforge.base_models (not imported: torch side)
_COMPLETE_MARKER = ".tuneforge-complete"
_MAX_HEADER_BYTES = 64 * 1024 * 1024
_PARAM = "lora.target_modules"

# Decoder families whose modules carry exactly the LLaMA names; `{n}` is any layer number.
_LLAMA_MODULES = frozenset({
    "model.embed_tokens", "lm_head",
    *(f"model.layers.{{n}}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")),
    *(f"model.layers.{{n}}.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")),
})
_LLAMA_FAMILY = frozenset({"llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2"})


def _matches(module: str, target: str) -> bool:
    """PEFT's rule for a list entry: the module's full name equals it or ends with `.` + it.
    Also accepted: a target that carries a prefix the file's names lack (`model.` + …)."""
    if "{n}" not in module:
        return (module == target or module.endswith("." + target)
                or target.endswith("." + module))
    parts = [r"\d+" if c == "{n}" else re.escape(c) for c in module.split(".")]
    return any(re.fullmatch(r"\.".join(parts[i:]), target) for i in range(len(parts))) \
        or re.fullmatch(r".+\." + r"\.".join(parts), target) is not None


def _safetensors_modules(directory: Path) -> frozenset[str] | None:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    modules = {"lm_head"}
    for file in files:
        with file.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                return None
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                return None
            header = json.loads(f.read(length))
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            if len(info.get("shape") or ()) >= 2 and "." in name:
                modules.add(name.rsplit(".", 1)[0])
    return frozenset(modules)


@lru_cache(maxsize=32)
def _modules_cached(directory: str, _stamp: tuple[float, ...]) -> frozenset[str] | None:
    path = Path(directory)
    try:
        found = _safetensors_modules(path)
    except (OSError, ValueError):
        found = None
    if found is not None:
        return found
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if isinstance(config, dict) and config.get("model_type") in _LLAMA_FAMILY:
        return _LLAMA_MODULES
    return None


def _stamp(directory: Path) -> tuple[float, ...]:
    """Changes when the directory's files do (a conversion or download finishing)."""
    stamps = []
    for name in ("config.json", _COMPLETE_MARKER):
        try:
            stamps.append((directory / name).stat().st_mtime)
        except OSError:
            stamps.append(0.0)
    try:
        stamps.append(directory.stat().st_mtime)
    except OSError:
        stamps.append(0.0)
    return tuple(stamps)


def known_modules(settings: Settings, model: str) -> frozenset[str] | None:
    """The base model's module names (`{n}` for any layer number), or None when unknown."""
    entry = settings.base_model(model)
    if entry is None:
        return None
    path = entry.path
    local = (Path(path).expanduser() if path and not path.startswith("s3://")
             else settings.effective_model_cache_dir / model)
    if local.is_dir():
        found = _modules_cached(str(local), _stamp(local))
        if found is not None:
            return found
    if model == EMBEDDED_MODEL_NAME and not path:
        return _LLAMA_MODULES  # SmolLM2 is a LlamaForCausalLM; converted later by the worker
    return None


def check_target_modules_shape(targets: list[str]) -> None:
    if not targets:
        raise invalid("lora.target_modules is empty: name at least one module (such as "
                      "'q_proj'), or pass 'all-linear'.", param=_PARAM,
                      code="invalid_target_modules")
    for target in targets:
        if not re.fullmatch(TARGET_MODULE_PATTERN, target):
            raise invalid(f"lora.target_modules has an invalid module name {target!r}: "
                          "expected a module name such as 'q_proj' or 'self_attn.q_proj'.",
                          param=_PARAM, code="invalid_target_modules")


async def check_lora_targets(settings: Settings, model: str, lora: LoraConfig) -> None:
    """400 (`param: lora.target_modules`) for an empty list or a name the base model lacks."""
    targets = lora.target_modules
    if isinstance(targets, str):  # "all-linear": PEFT's own preset
        return
    check_target_modules_shape(targets)
    modules = await asyncio.to_thread(known_modules, settings, model)
    if modules is None:
        return
    unknown = [t for t in targets if not any(_matches(m, t) for m in modules)]
    if unknown:
        names = sorted({m.replace("{n}.", "").rsplit(".", 1)[-1] for m in modules})
        shown = ", ".join(names[:40]) + (", …" if len(names) > 40 else "")
        raise invalid(f"lora.target_modules names {', '.join(map(repr, unknown))}, which "
                      f"'{model}' has no module of; its modules include: {shown}. Or pass "
                      "'all-linear'.", param=_PARAM, code="unknown_target_modules")

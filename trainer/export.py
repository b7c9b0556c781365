"""Final artifacts: the PEFT adapter (named after the served base model), the merged model, and
the full weights of a full/spectrum job."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from trainer.progress import set_adapter_base_name
from tuneforge.base_models import offline


def _atomic_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    return tmp


def _readable(directory: Path) -> None:
    """Files readable by the serving process (safetensors writes them 0600)."""
    for f in directory.iterdir():
        if f.is_file():
            f.chmod(0o644)


def save_adapter(model: Any, target: Path, served_model_name: str) -> Path:
    """Save the trained PEFT adapter to `target` (adapter_config.json +
    adapter_model.safetensors) with `base_model_name_or_path` = `served_model_name`."""
    tmp = _atomic_dir(target)
    # Only the trained adapter: a DPO run from a parent also holds TRL's frozen "ref" copy.
    adapters = getattr(model, "peft_config", None) or {}
    selected = ["default"] if "default" in adapters and len(adapters) > 1 else None
    try:
        model.save_pretrained(str(tmp), safe_serialization=True, selected_adapters=selected)
        set_adapter_base_name(tmp, served_model_name)
        _readable(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def merge_adapter(base_model_dir: Path, adapter_dir: Path, target: Path, tokenizer: Any) -> Path:
    """Load the base in full precision (also after QLoRA training), apply the adapter,
    `merge_and_unload`, and save safetensors + tokenizer (stock chat template) to `target`."""
    offline()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(base_model_dir), dtype="auto")
    dtype = base.dtype
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    merged = model.merge_and_unload()
    return _write_model_dir(merged.to(dtype), tokenizer, target)


def _write_model_dir(model: Any, tokenizer: Any, target: Path) -> Path:
    """Weights (safetensors) and tokenizer into `target`, all or nothing."""
    tmp = _atomic_dir(target)
    try:
        with torch.no_grad():
            model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _readable(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _config_dtype(model_dir: Path) -> torch.dtype | None:
    config = json.loads((Path(model_dir) / "config.json").read_text())
    name = config.get("dtype") or config.get("torch_dtype")
    value = getattr(torch, str(name), None) if name else None
    return value if isinstance(value, torch.dtype) else None


def save_full_model(model: Any, target: Path, tokenizer: Any, base_model_dir: Path) -> Path:
    """Save a full/spectrum job's weights (safetensors, in the base model's dtype) and the
    tokenizer to `target`: a model directory `AutoModelForCausalLM.from_pretrained` and vLLM
    load as is."""
    dtype = _config_dtype(base_model_dir)
    model = getattr(model, "module", model)
    model.config.use_cache = True  # gradient checkpointing turns it off while training
    if dtype is not None and dtype != next(model.parameters()).dtype:
        model = model.to(dtype)
    return _write_model_dir(model, tokenizer, target)

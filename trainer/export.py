"""Final artifacts: the PEFT adapter (named after the served base model) and the merged model."""

from __future__ import annotations

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
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
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
    merged = merged.to(dtype)
    tmp = _atomic_dir(target)
    try:
        with torch.no_grad():
            merged.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        _readable(tmp)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target

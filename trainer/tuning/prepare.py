"""`prepare_model`: the model a TRL trainer gets, for each tuning type.

- lora/qlora, new adapter: the frozen base (4-bit NF4 for qlora) and a PEFT `LoraConfig` the
  trainer applies.
- lora/qlora from a parent adapter (`parent_dir`): the parent loaded onto the base as the
  trainable adapter "default" (its own rank and targets). For DPO TRL 1.16 copies that
  adapter into a frozen "ref" adapter when it gets a `PeftModel` and no `ref_model`
  (`DPOTrainer.__init__`, then `use_adapter(model, "ref")` in the reference pass), so the
  reference policy is the parent (the SFT model), not the bare base. TRL 1.16 has no
  `model_adapter_name`/`ref_adapter_name` arguments any more; the names are reported here.
- full/spectrum: a plain fp32 model (mixed precision on CUDA comes from autocast), every
  weight trainable (full) or only the Spectrum-chosen matrices; for DPO `ref_model` is a
  frozen copy of the starting weights.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainer.device import DevicePlan
from trainer.errors import UNSUPPORTED, TrainingError
from trainer.modeling import load_base_model, peft_lora_config
from trainer.tuning.decision import TuningDecision
from tuneforge.base_models import offline
from tuneforge.domain import (
    FULL_WEIGHT_TUNINGS,
    JobSpec,
    MethodType,
    TuningType,
)

TRAINED_ADAPTER = "default"
REFERENCE_ADAPTER = "ref"  # the name TRL 1.16's DPOTrainer gives the reference copy


@dataclass
class PreparedModel:
    model: Any  # what the TRL trainer gets as `model`
    peft_config: Any | None  # the TRL trainer's `peft_config` (a new adapter) or None
    ref_adapter_name: str | None  # DPO: the adapter used as reference (continuing from SFT)
    model_adapter_name: str | None  # DPO: the trained adapter's name
    trainable: str  # e.g. "LoRA r=16 on all linear layers"
    ref_model: Any | None = None  # DPO, full/spectrum: the frozen starting weights


def _is_full_weights_dir(directory: Path) -> bool:
    return (directory / "config.json").exists() and not (directory / "adapter_config.json").exists()


def _count(model: Any) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def prepare_model(
    spec: JobSpec,
    decision: TuningDecision,
    device: DevicePlan,
    base_model_dir: Path,
    parent_dir: Path | None,
    say: Callable[..., None],
) -> PreparedModel:
    """Load the model for `decision` (see the module docstring). `parent_dir` is the parent
    model's local copy: a PEFT adapter directory (a checkpoint's optimizer state is ignored)
    or, for a full/spectrum parent, full weights."""
    offline()
    base_model_dir = Path(base_model_dir)
    parent_dir = Path(parent_dir) if parent_dir is not None else None
    full_parent = parent_dir is not None and _is_full_weights_dir(parent_dir)
    if decision.tuning in FULL_WEIGHT_TUNINGS:
        start = parent_dir if full_parent else base_model_dir
        if parent_dir is not None and not full_parent:
            # A LoRA parent: merge it into the starting weights, then train them all.
            return _full_weights(spec, decision, device, base_model_dir, say,
                                 adapter_dir=parent_dir)
        return _full_weights(spec, decision, device, start, say)
    if full_parent:
        raise TrainingError(
            UNSUPPORTED,
            f"{spec.parent.model if spec.parent else 'the parent'} is a full-weight model; a "
            "LoRA adapter on it could not be served as an adapter of the base model: use "
            "tuning 'full' or 'spectrum' to continue from it",
        )
    model = load_base_model(base_model_dir, device, decision.quantization)
    if parent_dir is None:
        lora = spec.lora
        targets = "all linear layers" if lora.target_modules == "all-linear" else (
            ", ".join(lora.target_modules))
        return PreparedModel(
            model=model,
            peft_config=peft_lora_config(lora),
            ref_adapter_name=None,
            model_adapter_name=None,
            trainable=f"LoRA r={lora.rank} alpha={lora.alpha:g} on {targets}"
            + (" (4-bit NF4 base)" if decision.quantization.value == "4bit" else ""),
        )
    return _from_parent_adapter(spec, model, parent_dir, say)


def _from_parent_adapter(spec: JobSpec, model: Any, parent_dir: Path, say: Callable[..., None]
                         ) -> PreparedModel:
    from peft import PeftModel

    config = json.loads((parent_dir / "adapter_config.json").read_text())
    model = PeftModel.from_pretrained(
        model, str(parent_dir), adapter_name=TRAINED_ADAPTER, is_trainable=True
    )
    targets = config.get("target_modules")
    if isinstance(targets, list):
        targets = ", ".join(sorted(targets))
    trained, _ = _count(model)
    name = spec.parent.model if spec.parent else str(parent_dir.name)
    if spec.lora.rank != config.get("r"):
        say(f"the parent adapter has rank {config.get('r')}; it is trained at that rank "
            f"(lora.rank={spec.lora.rank} applies to new adapters only)", "warn")
    dpo = spec.method == MethodType.DPO
    say(f"Starting from {name}: its LoRA adapter is trained further"
        + ("; the DPO reference policy is the parent (a frozen copy of its adapter)"
           if dpo else ""))
    return PreparedModel(
        model=model,
        peft_config=None,
        ref_adapter_name=REFERENCE_ADAPTER if dpo else None,
        model_adapter_name=TRAINED_ADAPTER if dpo else None,
        trainable=f"LoRA r={config.get('r')} on {targets} from {name} ({trained:,} parameters)",
    )


def _load_full(model_dir: Path, device: DevicePlan, adapter_dir: Path | None) -> Any:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        str(model_dir), dtype=torch.float32, attn_implementation=device.attn_implementation
    )
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    if device.device == "cuda":
        model = model.to("cuda")
    return model


def _full_weights(
    spec: JobSpec,
    decision: TuningDecision,
    device: DevicePlan,
    model_dir: Path,
    say: Callable[..., None],
    *,
    adapter_dir: Path | None = None,
) -> PreparedModel:
    model = _load_full(model_dir, device, adapter_dir)
    if adapter_dir is not None and spec.parent is not None:
        say(f"Starting from {spec.parent.model}: its adapter is merged into the weights "
            "that are trained")
    if decision.tuning == TuningType.SPECTRUM:
        from trainer.tuning.spectrum import apply_spectrum

        fraction = decision.spectrum_fraction or 0.25
        # Merged with a parent adapter the weights match no directory: no cached scan.
        scanned_dir = model_dir if adapter_dir is None else None
        description = apply_spectrum(model, scanned_dir, fraction, say)
    else:
        for p in model.parameters():
            p.requires_grad_(True)
        trained, _ = _count(model)
        description = f"full fine-tuning: all {trained:,} parameters"
    ref_model = None
    if spec.method == MethodType.DPO:
        ref_model = copy.deepcopy(model).eval()
        for p in ref_model.parameters():
            p.requires_grad_(False)
    return PreparedModel(
        model=model,
        peft_config=None,
        ref_adapter_name=None,
        model_adapter_name=None,
        trainable=description,
        ref_model=ref_model,
    )

"""Loading the base model for training (full precision or 4-bit) and the LoRA config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainer.device import DevicePlan
from tuneforge.base_models import offline
from tuneforge.domain import LoraConfig, Quantization


def load_tokenizer(model_dir: Path) -> Any:
    offline()
    from transformers import AutoTokenizer

    from trainer.families import apply_special_token_policy

    return apply_special_token_policy(AutoTokenizer.from_pretrained(str(model_dir)))


def disable_bnb_cpu_repack(model: torch.nn.Module) -> int:
    """On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights in place on the first
    inference pass into a kernel with no backward pass, after which the loss stays flat with no
    error (STACK.md). Turning the fast path off on every Linear4bit avoids it. Returns the
    number of layers changed."""
    import bitsandbytes as bnb

    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_base_model(model_dir: Path, plan: DevicePlan, quantization: Quantization) -> Any:
    """The frozen base model on the plan's device, 4-bit NF4 when `quantization` is NF4."""
    offline()
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"attn_implementation": plan.attn_implementation}
    if quantization == Quantization.NF4:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        compute_dtype = torch.bfloat16 if plan.bf16 else torch.float32
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=compute_dtype,
            bnb_4bit_use_double_quant=True,
            bnb_4bit_quant_storage=torch.uint8,
        )
        kwargs["dtype"] = compute_dtype
        kwargs["device_map"] = {"": 0} if plan.device == "cuda" else {"": "cpu"}
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
        disable_bnb_cpu_repack(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=plan.gradient_checkpointing
        )
        return model
    kwargs["dtype"] = plan.dtype
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    if plan.device == "cuda":
        model = model.to("cuda")
    return model


def peft_lora_config(lora: LoraConfig) -> Any:
    from peft import LoraConfig as PeftLoraConfig

    target = lora.target_modules
    return PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=target if target == "all-linear" else list(target),
        bias="none",
        task_type="CAUSAL_LM",
    )

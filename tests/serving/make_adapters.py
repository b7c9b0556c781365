"""Writes real PEFT LoRA adapters for SmolLM2-135M-Instruct with random (non-trivial) weights:
`python -m tests.serving.make_adapters MODEL_CACHE_DIR OUT_DIR N`. Run as a subprocess so the
test process stays free of torch. On a fresh machine it converts the base model first (or
waits for the vLLM launcher, which converts it at the same time, to finish)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(model_cache_dir: str, out_dir: str, count: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.base_models import EMBEDDED_MODEL_NAME, prepare_base_model

    model_dir = prepare_base_model(EMBEDDED_MODEL_NAME, "", Path(model_cache_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for index in range(count):
        torch.manual_seed(1000 + index)
        peft = get_peft_model(model, LoraConfig(
            r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
        target = Path(out_dir) / f"adapter-{index}"
        peft.save_pretrained(target)
        config = json.loads((target / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "SmolLM2-135M-Instruct"  # the served name
        (target / "adapter_config.json").write_text(json.dumps(config, indent=2))
        model = peft.unload()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))

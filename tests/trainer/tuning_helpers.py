"""Shared by the tuning-type tests: greedy answers of a saved model and weight comparisons."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

SERVED = "SmolLM2-135M-Instruct"


def answers(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 5) -> list[str]:
    """Greedy completions of `prompts` (chat-formatted) by `model`, a model or a directory."""
    if isinstance(model, str | Path):
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    model = model.eval()
    out = []
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        with torch.no_grad():
            ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out.append(tokenizer.decode(ids[0][inputs["input_ids"].shape[1]:],
                                    skip_special_tokens=True))
    return out


def answered_in_format(texts: list[str]) -> int:
    return sum(t.strip().startswith("ANSWER:") for t in texts)


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    weights: dict[str, torch.Tensor] = {}
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        weights.update({k: v.float() for k, v in load_file(str(f)).items()})
    return weights


def changed_tensors(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {name for name, value in after.items()
            if name in before and not torch.equal(before[name], value)}

"""Special-token policy per model family: the tokens that end a turn, and a pad that is not one.

Labels are built explicitly (`trainer/encode.py`) and TRL's collator pads them with -100, so a
pad equal to eos would not untrain the stop token here; still, a pad that is also the
end-of-turn token is one cast away from the classic "the model never learns to stop" bug, so
the family's own pad is preferred whenever the release leaves pad unset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# The pads families define (Llama 3.1/3.2, Gemma, a generic one, Phi-4, Llama 3), in order of
# preference; then unk, then <|endoftext|> (Qwen's pad); never a token that ends a turn.
PAD_CANDIDATES = (
    "<|finetune_right_pad_id|>",
    "<pad>",
    "<|pad|>",
    "<|dummy_85|>",
    "<|reserved_special_token_0|>",
)


def model_directory(tokenizer: Any) -> Path | None:
    path = Path(str(getattr(tokenizer, "name_or_path", "") or ""))
    return path if path.is_dir() else None


def end_of_turn_ids(tokenizer: Any, model_dir: Path | None = None) -> frozenset[int]:
    """eos plus every id `generation_config.json` stops on (the family's end-of-turn tokens:
    `<|eot_id|>`, `<|im_end|>`, `<end_of_turn>`, `<|end|>`...)."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    model_dir = model_dir or model_directory(tokenizer)
    path = model_dir / "generation_config.json" if model_dir else None
    if path is not None and path.is_file():
        eos = json.loads(path.read_text()).get("eos_token_id")
        ids.update(int(i) for i in (eos if isinstance(eos, list) else [eos]) if i is not None)
    return frozenset(ids)


def choose_pad_token(tokenizer: Any, stop_ids: frozenset[int]) -> str:
    """The release's pad when it sets one; else the family's pad, else unk, when it is not a
    stop token; else eos (safe only because labels are explicit, see the module docstring)."""
    if tokenizer.pad_token is not None:
        return tokenizer.pad_token
    vocab = tokenizer.get_vocab()
    for token in (*PAD_CANDIDATES, tokenizer.unk_token, "<|endoftext|>"):
        if token and token in vocab and vocab[token] not in stop_ids:
            return token
    return tokenizer.eos_token


def apply_special_token_policy(tokenizer: Any) -> Any:
    """Set the tokenizer's pad by `choose_pad_token` (bos and eos stay as the release has them:
    chat templates that write `bos_token` are rendered and tokenized without adding another)."""
    tokenizer.pad_token = choose_pad_token(tokenizer, end_of_turn_ids(tokenizer))
    return tokenizer

"""Tokenized training datasets (Hugging Face `datasets`) built from chat examples.

SFT rows carry `input_ids`, `labels` (already masked, already truncated) and `length`; TRL
skips its own tokenization and label building for such rows. DPO rows carry `prompt_ids`,
`chosen_ids` and `rejected_ids`, tokenized exactly as TRL would but with tool folding applied.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.encode import IGNORE_INDEX, ChatFormatter
from tuneforge.data_formats import DpoExample, SftExample


@dataclass
class TokenizedStats:
    examples: int = 0
    truncated: int = 0  # longer than max_length, cut
    dropped: int = 0  # nothing left to train on after truncation
    tokens: int = 0  # tokens in the kept (truncated) examples


def sft_rows(
    examples: list[SftExample], formatter: ChatFormatter, max_length: int
) -> tuple[list[dict[str, Any]], TokenizedStats]:
    rows: list[dict[str, Any]] = []
    stats = TokenizedStats()
    for example in examples:
        enc = formatter.encode_sft(example)
        input_ids, labels = enc["input_ids"], enc["labels"]
        if len(input_ids) > max_length:
            stats.truncated += 1
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        # The first label is never predicted (no token before it), so at least one other is needed.
        if all(label == IGNORE_INDEX for label in labels[1:]):
            stats.dropped += 1
            continue
        rows.append({"input_ids": input_ids, "labels": labels, "length": len(input_ids)})
        stats.tokens += len(input_ids)
    stats.examples = len(rows)
    return rows, stats


def dpo_rows(
    examples: list[DpoExample], formatter: ChatFormatter, max_length: int
) -> tuple[list[dict[str, Any]], TokenizedStats]:
    rows: list[dict[str, Any]] = []
    stats = TokenizedStats()
    for example in examples:
        enc = formatter.encode_dpo(example)
        prompt = len(enc["prompt_ids"])
        longest = prompt + max(len(enc["chosen_ids"]), len(enc["rejected_ids"]))
        if prompt >= max_length:
            stats.dropped += 1
            continue
        if longest > max_length:
            stats.truncated += 1
        rows.append(enc)
        stats.tokens += min(longest, max_length)
    stats.examples = len(rows)
    return rows, stats


def to_dataset(rows: list[dict[str, Any]]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(rows)

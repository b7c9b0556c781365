"""A summary of a loaded training file: sizes, token counts and data-quality warnings."""

from __future__ import annotations

import json
import statistics
from typing import Any

from trainer.encode import ChatFormatter, MaskError
from trainer.examples import LoadedData
from tuneforge.data_formats import DpoExample, SftExample

MAX_LISTED_LINES = 10


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:MAX_LISTED_LINES])
    return shown + (f" and {len(lines) - MAX_LISTED_LINES} more" if len(lines) > 10 else "")


def _assistant_messages(example: SftExample | DpoExample) -> list[dict[str, Any]]:
    if isinstance(example, DpoExample):
        return [example.chosen, example.rejected]
    return [m for m in example.messages if m["role"] == "assistant" and m.get("weight", 1)]


def _canonical(example: SftExample | DpoExample) -> str:
    if isinstance(example, DpoExample):
        payload: Any = [example.prompt, example.chosen, example.rejected, example.tools]
    else:
        payload = [example.messages, example.tools]
    return json.dumps(payload, sort_keys=True, ensure_ascii=False)


def _token_count(formatter: ChatFormatter, example: SftExample | DpoExample) -> int:
    if isinstance(example, DpoExample):
        enc = formatter.encode_dpo(example)
        return len(enc["prompt_ids"]) + max(len(enc["chosen_ids"]), len(enc["rejected_ids"]))
    return len(formatter.encode_sft(example)["input_ids"])


def build_report(data: LoadedData, tokenizer: Any, max_length: int) -> dict[str, Any]:
    """Example count, format, tokens per example (min/median/max), examples over
    `max_length` (they will be truncated), exact duplicates, empty assistant replies and a
    list of human-readable warnings. Warnings never fail a job."""
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    counts: list[int] = []
    over: list[int] = []
    empty: list[int] = []
    identical_pairs: list[int] = []
    seen: dict[str, int] = {}
    duplicates: list[int] = []
    for example in data.examples:
        try:
            n = _token_count(formatter, example)
        except MaskError as exc:
            raise exc.data_error() from None
        counts.append(n)
        if n > max_length:
            over.append(example.line)
        if any(
            not (m.get("content") or "").strip() and not m.get("tool_calls")
            for m in _assistant_messages(example)
        ):
            empty.append(example.line)
        if isinstance(example, DpoExample) and example.chosen == example.rejected:
            identical_pairs.append(example.line)
        key = _canonical(example)
        if key in seen:
            duplicates.append(example.line)
        else:
            seen[key] = example.line
    warnings: list[str] = list(data.warnings)
    if over:
        warnings.append(
            f"{len(over)} example(s) are longer than {max_length} tokens and will be truncated "
            f"(lines {_lines(over)})"
        )
    if duplicates:
        warnings.append(
            f"{len(duplicates)} example(s) are exact duplicates of earlier ones "
            f"(lines {_lines(duplicates)})"
        )
    if empty:
        warnings.append(
            f"{len(empty)} example(s) have an empty assistant reply (lines {_lines(empty)})"
        )
    if identical_pairs:
        warnings.append(
            f"{len(identical_pairs)} preference pair(s) have identical preferred and "
            f"non-preferred outputs (lines {_lines(identical_pairs)})"
        )
    return {
        "n_examples": len(data.examples),
        "format": data.format.value,
        "method": data.method.value,
        "tokens_per_example": {
            "min": min(counts) if counts else 0,
            "median": statistics.median(counts) if counts else 0,
            "max": max(counts) if counts else 0,
        },
        "total_tokens": sum(counts),
        "max_length": max_length,
        "n_over_max_length": len(over),
        "over_max_length_lines": over[:MAX_LISTED_LINES],
        "n_duplicates": len(duplicates),
        "duplicate_lines": duplicates[:MAX_LISTED_LINES],
        "n_empty_assistant": len(empty),
        "empty_assistant_lines": empty[:MAX_LISTED_LINES],
        "warnings": warnings,
    }

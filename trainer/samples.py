"""Small synthetic datasets, generated deterministically, for smoke tests and benchmarks.

The SFT task teaches a visible format: every answer starts with "ANSWER:" followed by the
result of a small arithmetic question, optionally with an explanation of varying length (so
the token counts per example vary, as in real data).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

_OPS = (("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b))
_FILLER = (
    "The numbers are combined step by step.",
    "First take the left number, then apply the operation with the right one.",
    "This is simple arithmetic that can be checked by hand.",
    "Counting carefully gives the result shown above.",
    "Each step follows the usual rules of arithmetic taught in school.",
)


def arithmetic_chat(n: int, *, seed: int = 0, explain: bool = False) -> list[dict[str, Any]]:
    """`n` OpenAI chat examples whose answers start with "ANSWER:"."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        name, op = rng.choice(_OPS)
        answer = f"ANSWER: {op(a, b)}"
        if explain:
            answer += " " + " ".join(rng.choice(_FILLER) for _ in range(rng.randint(0, 8)))
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": "You are a calculator."})
        messages += [
            {"role": "user", "content": f"What is {a} {name} {b}?"},
            {"role": "assistant", "content": answer},
        ]
        rows.append({"messages": messages})
    return rows


def heldout_prompts(n: int, *, seed: int = 10_000) -> list[str]:
    rng = random.Random(seed)
    return [
        f"What is {rng.randint(61, 99)} {rng.choice(_OPS)[0]} {rng.randint(61, 99)}?"
        for _ in range(n)
    ]


def preference_pairs(n: int, *, seed: int = 0) -> list[dict[str, Any]]:
    """`n` OpenAI preference examples: the preferred answer uses the "ANSWER:" format."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        name, op = rng.choice(_OPS)
        rows.append(
            {
                "input": {"messages": [{"role": "user", "content": f"What is {a} {name} {b}?"}]},
                "preferred_output": [{"role": "assistant", "content": f"ANSWER: {op(a, b)}"}],
                "non_preferred_output": [
                    {"role": "assistant", "content": f"I think it might be {op(a, b) + 1}."}
                ],
            }
        )
    return rows


def write_jsonl(rows: list[dict[str, Any]], path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path

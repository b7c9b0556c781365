"""Small training files written for the tests."""

from __future__ import annotations

import json


def chat_jsonl(n: int = 12) -> bytes:
    lines = [
        {"messages": [
            {"role": "user", "content": f"What is {i} plus {i}?"},
            {"role": "assistant", "content": f"ANSWER: {2 * i}"},
        ]}
        for i in range(n)
    ]
    return "\n".join(json.dumps(line) for line in lines).encode() + b"\n"

"""Validated training examples, already converted to chat messages.

A message is a plain dict: `role` (system/user/assistant/tool), `content` (a string), and
optionally `weight` (assistant only, 0 or 1), `tool_calls` (assistant only, OpenAI shape),
`tool_call_id` and `name`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from tuneforge.domain import MethodType

Message = dict[str, Any]


class DataFormat(StrEnum):
    OPENAI_CHAT = "openai_chat"  # {"messages": [...], "tools"?: [...]}
    OPENAI_PREFERENCE = "openai_preference"  # {"input", "preferred_output", "non_preferred_output"}
    ALPACA = "alpaca"  # {"instruction", "input"?, "output"}
    PROMPT_COMPLETION = "prompt_completion"  # TRL {"prompt", "completion"}
    PROMPT_CHOSEN_REJECTED = "prompt_chosen_rejected"  # TRL {"prompt", "chosen", "rejected"}


FORMAT_METHOD: dict[DataFormat, MethodType] = {
    DataFormat.OPENAI_CHAT: MethodType.SUPERVISED,
    DataFormat.ALPACA: MethodType.SUPERVISED,
    DataFormat.PROMPT_COMPLETION: MethodType.SUPERVISED,
    DataFormat.OPENAI_PREFERENCE: MethodType.DPO,
    DataFormat.PROMPT_CHOSEN_REJECTED: MethodType.DPO,
}


@dataclass
class SftExample:
    messages: list[Message]
    tools: list[dict[str, Any]] | None = None
    line: int = 0


@dataclass
class DpoExample:
    prompt: list[Message]  # the conversation before the answer
    chosen: Message  # one assistant message
    rejected: Message  # one assistant message
    tools: list[dict[str, Any]] | None = None
    line: int = 0


@dataclass
class LoadedData:
    format: DataFormat
    method: MethodType
    examples: list[Any]  # list[SftExample] for SFT, list[DpoExample] for DPO
    lines: int = 0  # non-blank lines read
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.examples)

"""Chat examples as a chat template gets them: weights dropped, and tools folded in when the
template cannot render them itself (SmolLM2's ChatML): tool definitions into the system message
and tool calls into the assistant text as `<tool_call>{json}</tool_call>` (the Hermes
convention), so the model is trained on what it must produce.

One owner for the worker's encoding (`trainer/encode.py`) and the plan's token counts
(`tuneforge/token_counts.py`), so both see the same text."""

from __future__ import annotations

import json
from typing import Any

from tuneforge.data_formats import Message


def template_messages(messages: list[Message], tools: list[dict[str, Any]] | None, *,
                      native_tools: bool) -> tuple[list[Message], list[dict[str, Any]] | None]:
    """Messages as the chat template gets them: weights dropped, and tools folded into the
    system message and assistant text when the template cannot render them."""
    if native_tools:
        out = []
        for m in messages:
            m = {k: v for k, v in m.items() if k != "weight"}
            if "tool_calls" in m:
                m["tool_calls"] = [_native_call(c) for c in m["tool_calls"]]
            out.append(m)
        return out, tools
    out = []
    for m in messages:
        content = m.get("content") or ""
        if m.get("tool_calls"):
            calls = "\n".join(_hermes_call(c) for c in m["tool_calls"])
            content = f"{content}\n{calls}" if content else calls
        out.append({"role": m["role"], "content": content})
    if tools:
        block = _tools_block(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{block}"}
        else:
            out.insert(0, {"role": "system", "content": block})
    return out, None


def _arguments(call: dict[str, Any]) -> Any:
    arguments = call["function"].get("arguments", "{}")
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except ValueError:
            return arguments
    return arguments


def _native_call(call: dict[str, Any]) -> dict[str, Any]:
    out = {"type": "function",
           "function": {"name": call["function"]["name"], "arguments": _arguments(call)}}
    if "id" in call:
        out["id"] = call["id"]
    return out


def _hermes_call(call: dict[str, Any]) -> str:
    payload = {"name": call["function"]["name"], "arguments": _arguments(call)}
    return f"<tool_call>\n{json.dumps(payload, ensure_ascii=False)}\n</tool_call>"


def _tools_block(tools: list[dict[str, Any]]) -> str:
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    return (
        "# Tools\n\nYou may call one or more functions to assist with the user query.\n"
        f"<tools>\n{lines}\n</tools>\n\n"
        "For each function call, return a JSON object with the function name and arguments "
        "within <tool_call></tool_call> tags."
    )

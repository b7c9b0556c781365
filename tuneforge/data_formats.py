"""What a training example looks like in each supported shape, and its conversion to chat.

The structural pass over a file's objects for one method (`FormatCheck`): every line is in a
recognized shape (OpenAI chat `messages`, OpenAI preference `input`/`preferred_output`/
`non_preferred_output`, Alpaca `instruction`/`input`/`output`, TRL `prompt`/`completion` and
`prompt`/`chosen`/`rejected`), one shape per file, a shape that fits the job's method, and the
rules of that shape; each example comes out converted to chat messages. Errors are
`tuneforge.jsonl.LineError` (`line N: ...`). Pure Python: the worker runs it before the
model-aware pass (chat template, tokens), and anything else may run it without torch.

A message is a plain dict: `role` (system/user/assistant/tool), `content` (a string), and
optionally `weight` (assistant only, 0 or 1), `tool_calls` (assistant only, OpenAI shape),
`tool_call_id` and `name`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tuneforge.domain import MethodType
from tuneforge.jsonl import LineError, json_type_name

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


ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight", "tool_calls", "tool_call_id"})
EXPECTED_SHAPES = (
    "messages (OpenAI chat), input/preferred_output/non_preferred_output (OpenAI DPO), "
    "instruction/input/output (Alpaca), prompt/completion or prompt/chosen/rejected (TRL)"
)


class FormatViolation(Exception):
    """One example breaks a rule of its format (the line number is added by `FormatCheck`)."""



def detect_format(obj: Any) -> DataFormat:
    if not isinstance(obj, dict):
        raise FormatViolation(f"each line must be a JSON object, got {json_type_name(obj)}")
    if "messages" in obj:
        return DataFormat.OPENAI_CHAT
    if "preferred_output" in obj or "non_preferred_output" in obj:
        return DataFormat.OPENAI_PREFERENCE
    if "instruction" in obj:
        return DataFormat.ALPACA
    if "chosen" in obj or "rejected" in obj:
        return DataFormat.PROMPT_CHOSEN_REJECTED
    if "completion" in obj:
        return DataFormat.PROMPT_COMPLETION
    if "input" in obj and "output" in obj:
        return DataFormat.ALPACA
    keys = ", ".join(sorted(str(k) for k in obj)[:8]) or "none"
    raise FormatViolation(f"unrecognized example format (keys: {keys}); expected {EXPECTED_SHAPES}")


# -- messages ---------------------------------------------------------------------------------


def _content(value: Any, where: str, *, allow_null: bool) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        if allow_null:
            return ""
        raise FormatViolation(f"{where}: content is null")
    if isinstance(value, list):
        parts = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise FormatViolation(
                    f'{where}: content part {j} must be {{"type": "text", "text": ...}} '
                    "(only text is supported)"
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise FormatViolation(f"{where}: content part {j} has no text string")
            parts.append(text)
        return "".join(parts)
    raise FormatViolation(f"{where}: content must be a string or a list of text parts")


def _tool_calls(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise FormatViolation(f"{where}: tool_calls must be a non-empty array")
    calls = []
    for j, call in enumerate(value):
        at = f"{where}: tool_calls[{j}]"
        if not isinstance(call, dict):
            raise FormatViolation(f"{at} must be an object")
        function = call.get("function")
        if call.get("type", "function") != "function" or not isinstance(function, dict):
            raise FormatViolation(f'{at} must have type "function" and a function object')
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise FormatViolation(f"{at}: function.name must be a non-empty string")
        arguments = function.get("arguments", "{}")
        if not isinstance(arguments, str | dict):
            raise FormatViolation(f"{at}: function.arguments must be a JSON string")
        call_id = call.get("id")
        if call_id is not None and not isinstance(call_id, str):
            raise FormatViolation(f"{at}: id must be a string")
        entry: dict[str, Any] = {
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        if call_id is not None:
            entry["id"] = call_id
        calls.append(entry)
    return calls


def parse_message(raw: Any, where: str, *, allow_weight: bool = True) -> Message:
    if not isinstance(raw, dict):
        raise FormatViolation(f"{where} must be an object, got {json_type_name(raw)}")
    unknown = sorted(str(k) for k in raw if k not in MESSAGE_KEYS)
    if unknown:
        raise FormatViolation(f"{where} has unrecognized key {unknown[0]!r}")
    role = raw.get("role")
    if "role" not in raw:
        raise FormatViolation(f"{where} is missing role")
    if role not in ROLES:
        raise FormatViolation(f"{where} has unrecognized role {role!r}; expected one of {ROLES}")
    message: Message = {"role": role}
    has_calls = "tool_calls" in raw and raw["tool_calls"] is not None
    if has_calls:
        if role != "assistant":
            raise FormatViolation(f"{where}: only assistant messages may have tool_calls")
        message["tool_calls"] = _tool_calls(raw["tool_calls"], where)
    if "content" not in raw and not has_calls:
        raise FormatViolation(f"{where} is missing content")
    message["content"] = _content(raw.get("content"), where, allow_null=has_calls)
    if "weight" in raw:
        if not allow_weight:
            raise FormatViolation(f"{where}: weight is not allowed here")
        if role != "assistant":
            raise FormatViolation(f"{where}: weight is only allowed on assistant messages")
        weight = raw["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            raise FormatViolation(f"{where}: weight must be 0 or 1")
        message["weight"] = int(weight)
    for key in ("name", "tool_call_id"):
        if key in raw and raw[key] is not None:
            if not isinstance(raw[key], str):
                raise FormatViolation(f"{where}: {key} must be a string")
            message[key] = raw[key]
    return message


def parse_messages(raw: Any, where: str, *, allow_weight: bool = True) -> list[Message]:
    if not isinstance(raw, list):
        raise FormatViolation(f"{where} must be an array of messages, got {json_type_name(raw)}")
    if not raw:
        raise FormatViolation(f"{where} is empty")
    return [parse_message(m, f"{where}[{i}]", allow_weight=allow_weight) for i, m in enumerate(raw)]


def parse_tools(raw: Any) -> list[dict[str, Any]] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise FormatViolation("tools must be an array")
    tools = []
    for j, tool in enumerate(raw):
        if not isinstance(tool, dict):
            raise FormatViolation(f"tools[{j}] must be an object")
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise FormatViolation(f'tools[{j}] must have type "function" and a function object')
        if not isinstance(function.get("name"), str) or not function["name"]:
            raise FormatViolation(f"tools[{j}]: function.name must be a non-empty string")
        if "parameters" in function and not isinstance(function["parameters"], dict):
            raise FormatViolation(f"tools[{j}]: function.parameters must be an object")
        if "description" in function and not isinstance(function["description"], str):
            raise FormatViolation(f"tools[{j}]: function.description must be a string")
        tools.append({"type": "function", "function": function})
    return tools or None


def _string(obj: dict[str, Any], key: str, *, required: bool = True) -> str:
    if key not in obj or obj[key] is None:
        if required:
            raise FormatViolation(f"missing {key}")
        return ""
    value = obj[key]
    if not isinstance(value, str):
        raise FormatViolation(f"{key} must be a string, got {json_type_name(value)}")
    return value


def _single_assistant(raw: Any, key: str) -> Message:
    if isinstance(raw, dict):
        raw = [raw]
    messages = parse_messages(raw, key, allow_weight=False)
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise FormatViolation(f"{key} must hold exactly one assistant message")
    return messages[0]


# -- SFT formats ------------------------------------------------------------------------------


def parse_openai_chat(obj: dict[str, Any]) -> SftExample:
    messages = parse_messages(obj.get("messages"), "messages")
    tools = parse_tools(obj.get("tools"))
    assistants = [m for m in messages if m["role"] == "assistant"]
    if not assistants:
        raise FormatViolation("example has no assistant message")
    if all(m.get("weight", 1) == 0 for m in assistants):
        raise FormatViolation("every assistant message has weight 0: nothing to train on")
    return SftExample(messages=messages, tools=tools)


def parse_alpaca(obj: dict[str, Any]) -> SftExample:
    instruction = _string(obj, "instruction")
    extra = _string(obj, "input", required=False)
    output = _string(obj, "output")
    system = _string(obj, "system", required=False)
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    if not user.strip():
        raise FormatViolation("instruction is empty")
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return SftExample(messages=messages)


def _prompt(obj: dict[str, Any]) -> list[Message]:
    if "prompt" not in obj:
        raise FormatViolation("missing prompt")
    raw = obj["prompt"]
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    messages = parse_messages(raw, "prompt", allow_weight=False)
    if messages[-1]["role"] == "assistant":
        raise FormatViolation("prompt must not end with an assistant message")
    return messages


def parse_prompt_completion(obj: dict[str, Any]) -> SftExample:
    prompt = _prompt(obj)
    if "completion" not in obj:
        raise FormatViolation("missing completion")
    raw = obj["completion"]
    if isinstance(raw, str):
        completion: list[Message] = [{"role": "assistant", "content": raw}]
    else:
        completion = parse_messages(raw, "completion", allow_weight=False)
        if any(m["role"] != "assistant" for m in completion):
            raise FormatViolation("completion messages must all be assistant messages")
    # Only the completion is trained on, as TRL does for prompt-completion data.
    prompt = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in prompt]
    return SftExample(messages=prompt + completion, tools=parse_tools(obj.get("tools")))


# -- DPO formats ------------------------------------------------------------------------------


def parse_openai_preference(obj: dict[str, Any]) -> DpoExample:
    raw_input = obj.get("input")
    if not isinstance(raw_input, dict):
        raise FormatViolation("input must be an object with messages")
    prompt = parse_messages(raw_input.get("messages"), "input.messages", allow_weight=False)
    for key in ("preferred_output", "non_preferred_output"):
        if key not in obj:
            raise FormatViolation(f"missing {key}")
    chosen = _single_assistant(obj["preferred_output"], "preferred_output")
    rejected = _single_assistant(obj["non_preferred_output"], "non_preferred_output")
    tools = parse_tools(raw_input.get("tools", obj.get("tools")))
    return DpoExample(prompt=prompt, chosen=chosen, rejected=rejected, tools=tools)


def parse_prompt_chosen_rejected(obj: dict[str, Any]) -> DpoExample:
    prompt = _prompt(obj)
    answers = []
    for key in ("chosen", "rejected"):
        if key not in obj:
            raise FormatViolation(f"missing {key}")
        raw = obj[key]
        if isinstance(raw, str):
            answers.append({"role": "assistant", "content": raw})
        else:
            answers.append(_single_assistant(raw, key))
    return DpoExample(
        prompt=prompt, chosen=answers[0], rejected=answers[1], tools=parse_tools(obj.get("tools"))
    )


PARSERS: dict[DataFormat, Callable[[dict[str, Any]], SftExample | DpoExample]] = {
    DataFormat.OPENAI_CHAT: parse_openai_chat,
    DataFormat.ALPACA: parse_alpaca,
    DataFormat.PROMPT_COMPLETION: parse_prompt_completion,
    DataFormat.OPENAI_PREFERENCE: parse_openai_preference,
    DataFormat.PROMPT_CHOSEN_REJECTED: parse_prompt_chosen_rejected,
}


class FormatCheck:
    """The structural pass over one file's objects for `method`: `add` each `(line, object)`
    in order; it returns the example converted to chat or raises `LineError`."""

    def __init__(self, method: MethodType) -> None:
        self.method = MethodType(method)
        self.format: DataFormat | None = None
        self._first_line = 0

    def add(self, line: int, obj: Any) -> SftExample | DpoExample:
        try:
            line_format = detect_format(obj)
        except FormatViolation as exc:
            raise LineError(line, str(exc)) from None
        if self.format is None:
            self._fix_format(line, line_format)
        elif line_format != self.format:
            raise LineError(
                line,
                f"example is in {line_format.value} format but the file is in "
                f"{self.format.value} format (line {self._first_line}); one file must use one "
                "format",
            )
        assert self.format is not None
        try:
            example = PARSERS[self.format](obj)
        except FormatViolation as exc:
            raise LineError(line, str(exc)) from None
        example.line = line
        return example

    def _fix_format(self, line: int, line_format: DataFormat) -> None:
        wanted = FORMAT_METHOD[line_format]
        if wanted != self.method:
            kind = "preference (DPO)" if wanted == MethodType.DPO else "supervised (SFT)"
            raise LineError(
                line,
                f"the file is in {line_format.value} format, which is {kind} data, but the "
                f"job's method is {self.method.value}",
            )
        self.format, self._first_line = line_format, line

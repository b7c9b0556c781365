"""Training copies of chat templates, with assistant turns marked for loss masking.

`apply_chat_template(..., return_assistant_tokens_mask=True)` (and TRL's
`assistant_only_loss`) only work with templates that wrap assistant output in
`{% generation %}...{% endgeneration %}`. Stock templates rarely do. `choose_training_template`
picks, in this order, the first candidate that renders byte-identically to the stock template on
the probe conversations and keeps the end-of-turn token inside the mask:

1. the stock template itself, when it already marks generations;
2. TRL's maintained training copy (`trl.chat_template_utils.get_training_chat_template`);
3. our own rewrite rules (`_RULES`) for templates TRL lacks or whose TRL copy renders
   differently (SmolLM2's ChatML, Qwen3, Mistral v0.3, Phi-4).

With none, assistant tokens are located by rendering conversation prefixes (prefix diff,
`trainer/encode.py`), which refuses conversations it cannot locate exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tuneforge.chat_messages import template_messages

GENERATION_TAG = "{% generation %}"


class MaskMethod(StrEnum):
    """How the assistant-token mask is made (what the training event reports)."""

    STOCK = "stock-template"  # the stock template marks generations itself
    TRL = "trl-training-template"
    RULE = "tuneforge-rule"
    PREFIX_DIFF = "prefix-diff"


class TemplateError(Exception):
    """No training copy can be made for a template, or a copy does not render identically."""


@dataclass(frozen=True)
class _Rule:
    """A training copy made by replacing each `old` (found exactly once) with its `new`."""

    name: str
    edits: tuple[tuple[str, str], ...]


# SmolLM2-Instruct (and other ChatML templates written the same way) render every message with
# this one expression. The training copy splits assistant messages so that the content and its
# `<|im_end|>` are inside the generation block and the trailing newline is not.
_CHATML_MESSAGE = (
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
)
_CHATML_MESSAGE_TRAINING = (
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{% else %}" + _CHATML_MESSAGE + "{% endif %}"
)

# Qwen3: TRL's copy always emits the <think> block, which renders earlier turns differently from
# the stock template. This copy only marks the assistant output (think block when the stock
# template renders one, text, tool calls, <|im_end|>).
_QWEN3_ASSISTANT = """        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}"""  # noqa: E501
_QWEN3_ASSISTANT_TRAINING = """        {{- '<|im_start|>' + message.role + '\\n' }}
        {%- generation %}
        {%- if loop.index0 > ns.last_query_index and (loop.last or (not loop.last and reasoning_content)) %}
            {{- '<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
        {%- else %}
            {{- content }}
        {%- endif %}"""  # noqa: E501
_QWEN3_END = """        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}"""
_QWEN3_END_TRAINING = """        {%- endif %}
        {{- '<|im_end|>' }}
        {%- endgeneration %}
        {{- '\\n' }}
    {%- elif message.role == "tool" %}"""

# Mistral-7B-Instruct-v0.3: an assistant turn is " " + text + eos, a tool-call turn is
# "[TOOL_CALLS] [...]" + eos; both are what the model emits after [/INST].
_MISTRAL_CALLS = '{{- "[TOOL_CALLS] [" }}'
_MISTRAL_CALLS_END = """                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}"""
_MISTRAL_TEXT = '{{- " " + message["content"]|trim + eos_token}}'

# Phi-4: ChatML with <|im_sep|>, one expression per role.
_PHI4_ASSISTANT = "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}"

_RULES: tuple[_Rule, ...] = (
    _Rule("chatml-concat", ((_CHATML_MESSAGE, _CHATML_MESSAGE_TRAINING),)),
    _Rule("qwen3", ((_QWEN3_ASSISTANT, _QWEN3_ASSISTANT_TRAINING),
                    (_QWEN3_END, _QWEN3_END_TRAINING))),
    _Rule("mistral-v3", (
        (_MISTRAL_CALLS, "{%- generation %}" + _MISTRAL_CALLS),
        (_MISTRAL_CALLS_END, _MISTRAL_CALLS_END + "\n        {%- endgeneration %}"),
        (_MISTRAL_TEXT, "{%- generation %}" + _MISTRAL_TEXT + "{%- endgeneration %}"),
    )),
    _Rule("phi4", ((_PHI4_ASSISTANT,
                    "{{'<|im_start|>assistant<|im_sep|>'}}{% generation %}"
                    "{{message['content'] + '<|im_end|>'}}{% endgeneration %}"),)),
)


@dataclass(frozen=True)
class TrainingTemplate:
    """The template training renders with (None: prefix diff) and how the mask is made.
    `refused` says why candidates were passed over (for the log and the event)."""

    template: str | None
    method: MaskMethod
    refused: tuple[str, ...] = ()


def has_generation_markers(template: str) -> bool:
    return GENERATION_TAG in template or "{%- generation" in template


def supports_tools(template: str) -> bool:
    """Whether the template renders a `tools` list and assistant `tool_calls` itself."""
    return "tools" in template and "tool_calls" in template


def make_training_template(stock: str) -> str:
    """Return our rule's training copy of `stock` (unchanged if it already marks generations).

    Raises `TemplateError` when no rewrite rule applies."""
    if has_generation_markers(stock):
        return stock
    for rule in _RULES:
        if all(stock.count(old) == 1 for old, _ in rule.edits):
            training = stock
            for old, new in rule.edits:
                training = training.replace(old, new)
            return training
    raise TemplateError("the chat template has no known assistant block to mark for training")


_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def probe_conversations() -> list[dict[str, Any]]:
    """Conversations covering the template's branches, in the training data's (OpenAI) form:
    with and without a system message, several turns, tool turns (as text and as native
    `tool_calls`), empty and multi-line content, and special characters."""
    call = {"id": "call00001", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    return [
        {
            "messages": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
            ]
        },
        {
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "2+2?"},
                {"role": "assistant", "content": "4"},
                {"role": "user", "content": "and 3+3?\nexplain"},
                {"role": "assistant", "content": "6\n\nbecause 3+3=6 {{ not jinja }} {% raw %}"},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": '<tool_call>{"name": "get_weather"}</tool_call>'},
                {"role": "tool", "content": '{"temp": 21}'},
                {"role": "assistant", "content": "21 degrees."},
            ],
            "tools": _TOOLS,
        },
        {
            "messages": [
                {"role": "system", "content": "Use the tools."},
                {"role": "user", "content": "weather in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call00001", "content": '{"temp": 21}'},
                {"role": "assistant", "content": "21 degrees."},
                {"role": "user", "content": "thanks"},
                {"role": "assistant", "content": "You're welcome."},
            ],
            "tools": _TOOLS,
        },
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]},
        {
            "messages": [
                {"role": "system", "content": "Ünïcødé ✓ 日本"},
                {"role": "user", "content": "x"},
            ]
        },
    ]


def _render(tokenizer: Any, template: str, messages: list[dict[str, Any]],
            tools: list[dict[str, Any]] | None, add_generation_prompt: bool) -> str | None:
    """The rendered text, or None when the template refuses the conversation (raises)."""
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tools=tools,
                                             tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    except Exception:
        return None


def verify_training_template(tokenizer: Any, stock: str, training: str) -> None:
    """Raise `TemplateError` unless `training` renders exactly like `stock` on every probe
    conversation (with and without the generation prompt; a conversation the stock template
    refuses must be refused by both), marks assistant tokens, and every marked assistant turn
    ends on a special token (the end-of-turn token is trained, so the model learns to stop)."""
    native = supports_tools(stock)
    marked_any = False
    for probe in probe_conversations():
        messages, tools = template_messages(probe["messages"], probe.get("tools"),
                                            native_tools=native)
        for add_generation_prompt in (False, True):
            a = _render(tokenizer, stock, messages, tools, add_generation_prompt)
            b = _render(tokenizer, training, messages, tools, add_generation_prompt)
            if a != b:
                raise TemplateError(
                    "the training template renders differently from the stock template: "
                    f"{a!r} != {b!r}"
                )
        if a is None or not any(m["role"] == "assistant" for m in messages):
            continue
        out = tokenizer.apply_chat_template(messages, chat_template=training, tools=tools,
                                            return_dict=True, return_assistant_tokens_mask=True)
        mask = list(out["assistant_masks"])
        marked_any = marked_any or any(mask)
        _check_turns_end_on_special_token(tokenizer, list(out["input_ids"]), mask)
    if not marked_any:
        raise TemplateError("the training template marks no assistant tokens")


def _check_turns_end_on_special_token(tokenizer: Any, ids: list[int], mask: list[int]) -> None:
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    start = None
    for i, bit in enumerate([*mask, 0]):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            run = [t for t in ids[start:i] if tokenizer.decode([t]).strip()]
            if run and run[-1] not in special:
                raise TemplateError("the training template leaves an assistant turn's "
                                    "end-of-turn token outside the mask")
            start = None


def _trl_training_template(tokenizer: Any) -> str | None:
    """TRL's training copy for the tokenizer's template; the stock template when TRL finds it
    already fit; None when TRL has none."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        training = get_training_chat_template(tokenizer)
    except ValueError:
        return None
    except Exception:
        return None
    return tokenizer.chat_template if training is None else training


def choose_training_template(tokenizer: Any) -> TrainingTemplate:
    """The verified training template for `tokenizer`'s own chat template and how its mask is
    made; `template=None` (prefix diff) when no candidate passes."""
    stock = tokenizer.chat_template
    if not isinstance(stock, str):
        return TrainingTemplate(None, MaskMethod.PREFIX_DIFF, ("no chat template",))
    refused: list[str] = []
    candidates: list[tuple[MaskMethod, Any]] = [
        (MaskMethod.STOCK, lambda: stock if has_generation_markers(stock) else None),
        (MaskMethod.TRL, lambda: _trl_training_template(tokenizer)),
        (MaskMethod.RULE, lambda: _rule_template(stock)),
    ]
    for method, make in candidates:
        training = make()
        if training is None:
            continue
        try:
            verify_training_template(tokenizer, stock, training)
        except TemplateError as exc:
            refused.append(f"{method.value}: {exc}")
            continue
        if method == MaskMethod.TRL and training == stock:
            method = MaskMethod.STOCK
        return TrainingTemplate(training, method, tuple(refused))
    return TrainingTemplate(None, MaskMethod.PREFIX_DIFF, tuple(refused))


def _rule_template(stock: str) -> str | None:
    if has_generation_markers(stock):
        return None
    try:
        return make_training_template(stock)
    except TemplateError:
        return None


def training_template_for(tokenizer: Any) -> str | None:
    """The verified training template for `tokenizer`'s own chat template, or None when there
    is none (callers then fall back to prefix-diff masking)."""
    return choose_training_template(tokenizer).template

"""Training copies of chat templates, with assistant turns marked for loss masking.

`apply_chat_template(..., return_assistant_tokens_mask=True)` (and TRL's
`assistant_only_loss`) only work with templates that wrap assistant output in
`{% generation %}...{% endgeneration %}`. Stock templates rarely do, so this module keeps
rewrite rules that turn a known stock template into a training copy which marks the assistant
text and its end-of-turn token, and renders byte-identically otherwise (`verify_training_template`
checks that on probe conversations before a template is used).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class _Rule:
    name: str
    stock: str
    training: str


_RULES: tuple[_Rule, ...] = (_Rule("chatml-concat", _CHATML_MESSAGE, _CHATML_MESSAGE_TRAINING),)

GENERATION_TAG = "{% generation %}"


class TemplateError(Exception):
    """No training copy can be made for a template, or a copy does not render identically."""


def has_generation_markers(template: str) -> bool:
    return GENERATION_TAG in template or "{%- generation" in template


def supports_tools(template: str) -> bool:
    """Whether the template renders a `tools` list and assistant `tool_calls` itself."""
    return "tools" in template and "tool_calls" in template


def make_training_template(stock: str) -> str:
    """Return the training copy of `stock` (unchanged if it already marks generations).

    Raises `TemplateError` when no rewrite rule applies."""
    if has_generation_markers(stock):
        return stock
    for rule in _RULES:
        if stock.count(rule.stock) == 1:
            return stock.replace(rule.stock, rule.training)
    raise TemplateError("the chat template has no known assistant block to mark for training")


def probe_conversations() -> list[dict[str, Any]]:
    """Conversations covering the template's branches: with and without a system message,
    several turns, tool turns, empty and multi-line content, and special characters."""
    tools = [
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
            "tools": tools,
        },
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}]},
        {
            "messages": [
                {"role": "system", "content": "Ünïcødé ✓ 日本"},
                {"role": "user", "content": "x"},
            ]
        },
    ]


def verify_training_template(tokenizer: Any, stock: str, training: str) -> None:
    """Raise `TemplateError` unless `training` renders exactly like `stock` on every probe
    conversation, with and without the generation prompt, and marks assistant tokens."""
    marked_any = False
    for probe in probe_conversations():
        for add_generation_prompt in (False, True):
            kwargs = {
                "tools": probe.get("tools"),
                "tokenize": False,
                "add_generation_prompt": add_generation_prompt,
            }
            a = tokenizer.apply_chat_template(probe["messages"], chat_template=stock, **kwargs)
            b = tokenizer.apply_chat_template(probe["messages"], chat_template=training, **kwargs)
            if a != b:
                raise TemplateError(
                    "the training template renders differently from the stock template: "
                    f"{a!r} != {b!r}"
                )
        if any(m["role"] == "assistant" for m in probe["messages"]):
            out = tokenizer.apply_chat_template(
                probe["messages"],
                chat_template=training,
                tools=probe.get("tools"),
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            marked_any = marked_any or any(out["assistant_masks"])
    if not marked_any:
        raise TemplateError("the training template marks no assistant tokens")


def training_template_for(tokenizer: Any) -> str | None:
    """The verified training template for `tokenizer`'s own chat template, or None when the
    template cannot be rewritten (callers then fall back to prefix-diff masking)."""
    stock = tokenizer.chat_template
    if not isinstance(stock, str):
        return None
    try:
        training = make_training_template(stock)
        verify_training_template(tokenizer, stock, training)
    except TemplateError:
        return None
    return training

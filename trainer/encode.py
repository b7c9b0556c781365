"""Turn chat examples into token ids and loss labels with the model's own chat template.

- Templates that render tools themselves get `tools` and `tool_calls` natively. For templates
  that do not (SmolLM2's ChatML), tool definitions go into the system message and tool calls
  into the assistant text as `<tool_call>{json}</tool_call>` (the Hermes convention), so that
  the model is trained on what it must produce.
- SFT labels are the input ids on assistant tokens (text and end-of-turn) and -100 elsewhere,
  and -100 on assistant turns with weight 0. Assistant spans come from the training template's
  `{% generation %}` marks; for a template with no training copy they are found by rendering
  each conversation prefix (prefix diff).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trainer.chat_template import supports_tools, training_template_for
from tuneforge.chat_messages import template_messages
from tuneforge.data_formats import DpoExample, Message, SftExample

IGNORE_INDEX = -100


@dataclass
class ChatFormatter:
    """The tokenizer plus what we know about its chat template."""

    tokenizer: Any
    training_template: str | None
    native_tools: bool

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> ChatFormatter:
        if not isinstance(tokenizer.chat_template, str):
            raise ValueError("the tokenizer has no chat template")
        return cls(
            tokenizer=tokenizer,
            training_template=training_template_for(tokenizer),
            native_tools=supports_tools(tokenizer.chat_template),
        )

    # -- rendering ----------------------------------------------------------------------------

    def template_messages(
        self, messages: list[Message], tools: list[dict[str, Any]] | None
    ) -> tuple[list[Message], list[dict[str, Any]] | None]:
        """Messages as the template expects them (`tuneforge.chat_messages`)."""
        return template_messages(messages, tools, native_tools=self.native_tools)

    def render(
        self,
        messages: list[Message],
        tools: list[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = False,
    ) -> str:
        msgs, tools = self.template_messages(messages, tools)
        return self.tokenizer.apply_chat_template(
            msgs, tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def prompt_ids(self, messages: list[Message], tools: list[dict[str, Any]] | None) -> list[int]:
        msgs, tools = self.template_messages(messages, tools)
        return list(
            self.tokenizer.apply_chat_template(
                msgs, tools=tools, tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )

    # -- SFT ----------------------------------------------------------------------------------

    def encode_sft(self, example: SftExample) -> dict[str, list[int]]:
        """`input_ids` and `labels` for one example (not truncated)."""
        msgs, tools = self.template_messages(example.messages, example.tools)
        weights = [m.get("weight", 1) for m in example.messages if m["role"] == "assistant"]
        if self.training_template is not None:
            out = self.tokenizer.apply_chat_template(
                msgs,
                tools=tools,
                chat_template=self.training_template,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            input_ids = list(out["input_ids"])
            spans = _runs(out["assistant_masks"])
            if len(spans) == len(weights):
                return {"input_ids": input_ids, "labels": _labels(input_ids, spans, weights)}
        return self._encode_by_prefix_diff(msgs, tools, weights)

    def _encode_by_prefix_diff(
        self, msgs: list[Message], tools: list[dict[str, Any]] | None, weights: list[int]
    ) -> dict[str, list[int]]:
        render = self.tokenizer.apply_chat_template
        full = render(msgs, tools=tools, tokenize=False)
        char_spans: list[tuple[int, int]] = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            before = render(msgs[:i], tools=tools, tokenize=False, add_generation_prompt=True)
            upto = render(msgs[: i + 1], tools=tools, tokenize=False)
            if not (full.startswith(upto) and upto.startswith(before)):
                raise ValueError(
                    "the chat template does not render conversations prefix by prefix; "
                    "assistant tokens cannot be located"
                )
            char_spans.append((len(before), len(upto)))
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        input_ids = list(enc["input_ids"])
        labels = [IGNORE_INDEX] * len(input_ids)
        for (start, end), weight in zip(char_spans, weights, strict=True):
            if weight == 0:
                continue
            for t, (a, b) in enumerate(enc["offset_mapping"]):
                if b > start and a < end:
                    labels[t] = input_ids[t]
        return {"input_ids": input_ids, "labels": labels}

    # -- DPO ----------------------------------------------------------------------------------

    def encode_dpo(self, example: DpoExample) -> dict[str, list[int]]:
        """`prompt_ids`, `chosen_ids`, `rejected_ids` as TRL's DPOTrainer expects them."""
        prompt_ids = self.prompt_ids(example.prompt, example.tools)
        out: dict[str, list[int]] = {}
        lengths = []
        for key, answer in (("chosen", example.chosen), ("rejected", example.rejected)):
            msgs, tools = self.template_messages([*example.prompt, answer], example.tools)
            ids = list(
                self.tokenizer.apply_chat_template(
                    msgs, tools=tools, tokenize=True, return_dict=True
                )["input_ids"]
            )
            out[key] = ids
            lengths.append(_common_prefix(prompt_ids, ids))
        n = min(lengths)
        return {
            "prompt_ids": prompt_ids[:n],
            "chosen_ids": out["chosen"][n:],
            "rejected_ids": out["rejected"][n:],
        }


def _runs(mask: list[int]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, bit in enumerate(mask):
        if bit and start is None:
            start = i
        elif not bit and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(mask)))
    return spans


def _labels(input_ids: list[int], spans: list[tuple[int, int]], weights: list[int]) -> list[int]:
    labels = [IGNORE_INDEX] * len(input_ids)
    for (start, end), weight in zip(spans, weights, strict=True):
        if weight:
            labels[start:end] = input_ids[start:end]
    return labels


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

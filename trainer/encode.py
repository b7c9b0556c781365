"""Turn chat examples into token ids and loss labels with the model's own chat template.

- Templates that render tools themselves get `tools` and `tool_calls` natively. For templates
  that do not (SmolLM2's ChatML), tool definitions go into the system message and tool calls
  into the assistant text as `<tool_call>{json}</tool_call>` (the Hermes convention), so that
  the model is trained on what it must produce.
- SFT labels are the input ids on assistant tokens (text and end-of-turn) and -100 elsewhere,
  and -100 on assistant turns with weight 0. Assistant spans come from the training template's
  `{% generation %}` marks (`trainer.chat_template.choose_training_template`); for a template
  with no training copy they are found by rendering each conversation prefix (prefix diff).
- Every span runs from the end of the generation prompt to its first end-of-turn token, and
  is checked: one span per assistant message, each holding its message's text and ending on an
  end-of-turn token, and no message of the conversation dropped by the template. An example
  that fails raises `MaskError` (never a silently wrong mask); the worker fails the job at
  validation with its message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.chat_template import MaskMethod, choose_training_template, supports_tools
from trainer.errors import INVALID_TRAINING_FILE, DataError
from trainer.families import end_of_turn_ids
from tuneforge.chat_messages import template_messages
from tuneforge.data_formats import DpoExample, Message, SftExample

IGNORE_INDEX = -100


class MaskError(ValueError):
    """The assistant tokens of an example cannot be located exactly with this model's chat
    template. The message names the model and why; `line` is the example's line."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line

    def data_error(self, code: str = INVALID_TRAINING_FILE) -> DataError:
        """The same refusal as the worker reports a bad training file."""
        prefix = f"line {self.line}: " if self.line else ""
        return DataError(code, prefix + self.message, self.line or None)


@dataclass
class ChatFormatter:
    """The tokenizer plus what we know about its chat template."""

    tokenizer: Any
    training_template: str | None
    native_tools: bool
    mask_method: MaskMethod = MaskMethod.PREFIX_DIFF
    model_name: str = "the base model"
    stop_ids: frozenset[int] = frozenset()
    generation_prompt: str = ""  # what add_generation_prompt appends: "<|im_start|>assistant\n"

    def __post_init__(self) -> None:
        if not self.stop_ids:
            self.stop_ids = end_of_turn_ids(self.tokenizer)

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, model_name: str | None = None) -> ChatFormatter:
        if not isinstance(tokenizer.chat_template, str):
            raise ValueError("the tokenizer has no chat template")
        chosen = choose_training_template(tokenizer)
        return cls(
            tokenizer=tokenizer,
            training_template=chosen.template,
            native_tools=supports_tools(tokenizer.chat_template),
            mask_method=chosen.method,
            model_name=model_name or _model_name(tokenizer),
            generation_prompt=_generation_prompt(tokenizer),
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
        """`input_ids` and `labels` for one example (not truncated). Raises `MaskError`."""
        msgs, tools = self.template_messages(example.messages, example.tools)
        weights = [m.get("weight", 1) for m in example.messages if m["role"] == "assistant"]
        try:
            try:
                input_ids, spans = self._spans(msgs, tools, len(weights))
            except MaskError:
                raise
            except Exception as exc:  # the template's raise_exception, or a field it refuses
                raise self._refuse(f"it refuses the conversation ({type(exc).__name__}: "
                                   f"{exc})") from None
            spans = self._checked_spans(msgs, input_ids, spans)
        except MaskError as exc:
            exc.line = example.line
            raise
        return {"input_ids": input_ids, "labels": _labels(input_ids, spans, weights)}

    def _spans(self, msgs: list[Message], tools: list[dict[str, Any]] | None, n_assistant: int
               ) -> tuple[list[int], list[tuple[int, int]]]:
        """Token ids and the assistant spans: the training template's marks when it marks one
        span per assistant message, else prefix diff."""
        input_ids: list[int] | None = None
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
            if len(spans) == n_assistant:
                return input_ids, spans
        return self._spans_by_prefix_diff(msgs, tools)

    def _refuse(self, why: str) -> MaskError:
        return MaskError(f"the chat template of model {self.model_name!r} cannot be trained on "
                         f"this conversation: {why}")

    def _spans_by_prefix_diff(
        self, msgs: list[Message], tools: list[dict[str, Any]] | None
    ) -> tuple[list[int], list[tuple[int, int]]]:
        render = self.tokenizer.apply_chat_template
        full = render(msgs, tools=tools, tokenize=False)
        char_spans: list[tuple[int, int]] = []
        for i, m in enumerate(msgs):
            if m["role"] != "assistant":
                continue
            try:
                before = render(msgs[:i], tools=tools, tokenize=False, add_generation_prompt=True)
                upto = render(msgs[: i + 1], tools=tools, tokenize=False)
            except Exception as exc:  # the template refuses the partial conversation
                raise self._refuse(f"it refuses the conversation up to message {i + 1} "
                                   f"({type(exc).__name__}: {exc})") from None
            if not (full.startswith(upto) and upto.startswith(before)):
                raise self._refuse(
                    f"it renders the conversation differently once later turns follow "
                    f"assistant message {i + 1} (earlier turns are rewritten), so its tokens "
                    "cannot be located, and no training template marks them one per message"
                )
            char_spans.append((len(before), len(upto)))
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        spans = []
        for start, end in char_spans:
            tokens = [t for t, (a, b) in enumerate(enc["offset_mapping"]) if b > start and a < end]
            spans.append((tokens[0], tokens[-1] + 1) if tokens else (0, 0))
        return list(enc["input_ids"]), spans

    def _after_generation_prompt(self, input_ids: list[int], start: int, stop: int) -> int:
        """`start` moved past blank tokens that complete the generation prompt (TRL's Qwen2.5
        copy opens its block before the prompt's "\n"): the model never generates them."""
        prompt = self.generation_prompt
        if not prompt:
            return start
        decode = self.tokenizer.decode
        context = input_ids[max(0, start - 16):start]
        if decode(context, skip_special_tokens=False).endswith(prompt):
            return start
        for end in range(start + 1, stop):
            if decode([input_ids[end - 1]]).strip():
                break
            if decode(context + input_ids[start:end], skip_special_tokens=False).endswith(prompt):
                return end
        return start

    def _checked_spans(self, msgs: list[Message], input_ids: list[int],
                       spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Each span cut to run from the generation prompt's end to its first end-of-turn token.
        Raises `MaskError` unless every span ends on one and holds its message's text, and
        every message is rendered."""
        assistants = [m for m in msgs if m["role"] == "assistant"]
        if len(spans) != len(assistants):
            raise self._refuse(f"it marks {len(spans)} assistant turns where the conversation "
                               f"has {len(assistants)}")
        decode = self.tokenizer.decode
        checked = []
        for n, ((start, end), message) in enumerate(zip(spans, assistants, strict=True), 1):
            stop = next((i for i in range(start, end) if input_ids[i] in self.stop_ids), None)
            if stop is None:
                raise self._refuse(f"assistant turn {n} does not end with an end-of-turn "
                                   "token inside its span, so the model would not learn to stop")
            start = self._after_generation_prompt(input_ids, start, stop)
            checked.append((start, stop + 1))
            text = decode(input_ids[start:stop + 1], skip_special_tokens=False)
            for expected in _expected_texts(message):
                if _squash(expected) not in _squash(text):
                    raise self._refuse(f"assistant turn {n} is rendered without part of its "
                                       f"content ({_short(expected)!r}); the template drops or "
                                       "rewrites it (reasoning or tool calls of earlier turns?)")
        rendered = _squash(decode(input_ids, skip_special_tokens=False))
        for i, m in enumerate(msgs, 1):
            content = m.get("content")
            if m["role"] != "assistant" and isinstance(content, str) and content.strip() \
                    and not _rendered_in(content, rendered):
                raise self._refuse(
                    f"it drops message {i} ({m['role']}) from a conversation that ends with an "
                    "assistant turn, so training would not see what inference sees; "
                    + _DROPPED_HINTS.get(m["role"], "")
                )
        return checked

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


_DROPPED_HINTS = {
    "system": "put the system text at the start of the first user message instead",
    "tool": "this template has no tool role; put tool results in a user message instead",
}


def _generation_prompt(tokenizer: Any) -> str:
    """The text after which the model starts writing its turn ("" when none, as Mistral's)."""
    messages = [{"role": "user", "content": "x"}]
    try:
        closed = tokenizer.apply_chat_template(messages, tokenize=False)
        opened = tokenizer.apply_chat_template(messages, tokenize=False,
                                               add_generation_prompt=True)
    except Exception:  # a template that needs more than one user message: no trimming
        return ""
    common = 0
    for a, b in zip(closed, opened, strict=False):
        if a != b:
            break
        common += 1
    return opened[common:]


def _model_name(tokenizer: Any) -> str:
    """The model's directory name (never the full server path)."""
    name = Path(str(getattr(tokenizer, "name_or_path", "") or "")).name
    return name or "the base model"


def _expected_texts(message: Message) -> list[str]:
    """What an assistant message's span must contain: its text and its tool calls' names."""
    texts = []
    content = message.get("content")
    if isinstance(content, str) and content.strip():
        texts.append(content.strip())
    for call in message.get("tool_calls") or []:
        function = call.get("function", call)
        texts.append(str(function.get("name", "")))
    return [t for t in texts if t]


def _rendered_in(content: str, rendered: str) -> bool:
    """Whether `content` is in the squashed rendering as is or as a JSON string (Llama 3.1
    writes tool results with `tojson`)."""
    forms = (content, json.dumps(content, ensure_ascii=False), json.dumps(content))
    return any(_squash(form) in rendered for form in forms)


def _squash(text: str) -> str:
    """Whitespace-insensitive form (templates trim, tokenizers may drop a leading space)."""
    return "".join(text.split())


def _short(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


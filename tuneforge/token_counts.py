"""Token counts of training examples without torch or transformers: the base model's
`tokenizer.json` (the `tokenizers` package) and its chat template rendered with jinja2 the
way transformers renders it (`transformers/utils/chat_template_utils.py`: an
`ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with the `loopcontrols`
extension, `raise_exception`, `strftime_now` and a `tojson` that does not escape HTML; the
tokenizer's special tokens as template variables; the text encoded without adding special
tokens). The API's plan endpoint counts with it; `tests/api/test_plan.py` checks the counts
against transformers' `apply_chat_template(tokenize=True)`.

Examples are rendered as the worker renders them (`trainer/encode.py`): a template that does
not render tools itself gets the tool definitions in the system message and tool calls in the
assistant text (`<tool_call>{json}</tool_call>`, the Hermes convention). An SFT example counts
its whole conversation; a DPO pair counts the longer of prompt + chosen and prompt + rejected
(what one sequence of the pair holds; the worker's data report counts the same), and a
training pass computes both (`ExampleTokens.processed`).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.chat_messages import template_messages
from tuneforge.data_formats import DpoExample, Message, SftExample

MAX_LISTED_LINES = 10
# tokenizer_config.json keys transformers exposes as template variables (`special_tokens_map`).
SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token",
                      "cls_token", "mask_token")


class TokenCountError(Exception):
    """The model directory has no usable tokenizer or chat template."""


@dataclass(frozen=True)
class ExampleTokens:
    line: int
    sequences: tuple[int, ...]  # tokens of each sequence (one; a DPO pair: chosen, rejected)

    @property
    def length(self) -> int:
        """Tokens of the example's longest sequence, before truncation."""
        return max(self.sequences)

    def processed(self, max_seq_length: int) -> int:
        """Tokens a training pass computes for the example, after truncation."""
        return sum(min(n, max_seq_length) for n in self.sequences)


class ChatTokenizer:
    """A base model's tokenizer and chat template, torch-free."""

    def __init__(self, tokenizer: Any, template_source: str,
                 special_tokens: dict[str, str]) -> None:
        self.tokenizer = tokenizer
        self.template_source = template_source
        self.template = _compile(template_source)
        self.special_tokens = special_tokens
        # As trainer.chat_template.supports_tools decides it.
        self.native_tools = "tools" in template_source and "tool_calls" in template_source

    @classmethod
    def from_dir(cls, model_dir: Path) -> ChatTokenizer:
        model_dir = Path(model_dir)
        stamp = tuple(_mtime(model_dir / name) for name in
                      ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"))
        return _load(str(model_dir), stamp)

    # -- rendering ------------------------------------------------------------------------

    def render(self, messages: list[Message], tools: list[dict[str, Any]] | None = None, *,
               add_generation_prompt: bool = False) -> str:
        msgs, tools = template_messages(messages, tools, native_tools=self.native_tools)
        return self.template.render(messages=msgs, tools=tools, documents=None,
                                    add_generation_prompt=add_generation_prompt,
                                    **self.special_tokens)

    def count_text(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count(self, example: SftExample | DpoExample) -> ExampleTokens:
        if isinstance(example, DpoExample):
            chosen = self.count_text(self.render([*example.prompt, example.chosen],
                                                 example.tools))
            rejected = self.count_text(self.render([*example.prompt, example.rejected],
                                                   example.tools))
            return ExampleTokens(example.line, (chosen, rejected))
        return ExampleTokens(example.line,
                             (self.count_text(self.render(example.messages, example.tools)),))


@dataclass
class TokenStats:
    """Token counts of a file's examples against a maximum sequence length."""

    max_seq_length: int
    counts: list[ExampleTokens] = field(default_factory=list)

    def add(self, tokens: ExampleTokens) -> None:
        self.counts.append(tokens)

    @property
    def over(self) -> list[int]:
        return [c.line for c in self.counts if c.length > self.max_seq_length]

    def processed(self, lines: set[int] | None = None) -> int:
        """Tokens one pass over the examples (those on `lines`, or all) computes, after
        truncation to `max_seq_length`."""
        return sum(c.processed(self.max_seq_length) for c in self.counts
                   if lines is None or c.line in lines)

    def summary(self) -> dict[str, Any]:
        lengths = [c.length for c in self.counts]
        over = self.over
        return {
            "total": sum(lengths),
            "min": min(lengths) if lengths else 0,
            "median": statistics.median(lengths) if lengths else 0,
            "max": max(lengths) if lengths else 0,
            "max_seq_length": self.max_seq_length,
            "n_over_max_seq_length": len(over),
            "over_max_seq_length_lines": over[:MAX_LISTED_LINES],
        }


# -- loading --------------------------------------------------------------------------------


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@lru_cache(maxsize=8)
def _load(model_dir: str, _stamp: tuple[float, ...]) -> ChatTokenizer:
    try:
        import jinja2  # noqa: F401 - the chat template's engine
        from tokenizers import Tokenizer
    except ImportError as exc:  # an API image without them
        raise TokenCountError(f"the `{exc.name}` package is not installed") from exc
    directory = Path(model_dir)
    tokenizer_file = directory / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise TokenCountError("the base model has no tokenizer.json")
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        config = {}
    template = _chat_template(directory, config)
    if template is None:
        raise TokenCountError("the base model has no chat template")
    special = {}
    for key in SPECIAL_TOKEN_KEYS:
        value = config.get(key)
        if isinstance(value, dict):  # a serialized AddedToken
            value = value.get("content")
        if isinstance(value, str):
            special[key] = value
    return ChatTokenizer(Tokenizer.from_file(str(tokenizer_file)), template, special)


def _chat_template(directory: Path, config: dict[str, Any]) -> str | None:
    jinja_file = directory / "chat_template.jinja"
    return chat_template_source(jinja_file.read_text() if jinja_file.is_file() else None,
                                config)


def chat_template_source(jinja: str | None, tokenizer_config: dict[str, Any]) -> str | None:
    """A model's chat template in transformers' order: `chat_template.jinja` (its text, when
    the file exists), else `tokenizer_config.json`'s `chat_template` (a string, or named
    templates of which "default" is used)."""
    if jinja is not None:
        return jinja
    value = tokenizer_config.get("chat_template")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        default = named.get("default")
        return default if isinstance(default, str) else None
    return None


def _compile(source: str) -> Any:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """`{% generation %}…{% endgeneration %}` renders its body (transformers' tracker
        only records where it is)."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body) \
                .set_lineno(lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)

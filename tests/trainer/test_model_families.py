"""Loss masks, stop tokens, pads and tool calls for each model family, on tiny random models
built from the family's config class, special tokens and real chat template
(`tests/model_families.py`); then LoRA training, save and merge on two of them.

The expected label spans are computed here independently of `trainer/encode.py`: the stock
template's rendering is searched for each assistant turn's opening (the family's assistant
header) and its end-of-turn token, and the tokens between them are the span.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.model_families import FAMILIES, build_tiny_model
from trainer.chat_template import MaskMethod
from trainer.encode import IGNORE_INDEX, ChatFormatter, MaskError
from tuneforge.data_formats import SftExample

# Where each family's assistant turns start (after this text) and end (on this token).
ASSISTANT_TURN = {
    "llama3": (r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n", "<|eot_id|>"),
    "llama3_1": (r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n", "<|eot_id|>"),
    "llama3_2": (r"<\|start_header_id\|>assistant<\|end_header_id\|>\n\n", "<|eot_id|>"),
    "qwen2_5": (r"<\|im_start\|>assistant\n", "<|im_end|>"),
    "qwen3": (r"<\|im_start\|>assistant\n", "<|im_end|>"),
    "mistral": (r"\[/INST\]|\[/TOOL_RESULTS\]", "</s>"),
    "gemma2": (r"<start_of_turn>model\n", "<end_of_turn>"),
    "gemma3": (r"<start_of_turn>model\n", "<end_of_turn>"),
    "phi3": (r"<\|assistant\|>\n", "<|end|>"),
    "phi4": (r"<\|im_start\|>assistant<\|im_sep\|>", "<|im_end|>"),
}
# What each family's template can render: a system message, tool turns.
NO_SYSTEM = {"mistral", "gemma2"}  # dropped unless the conversation ends on a user turn; refused
NO_TOOL_ROLE = {"gemma2", "gemma3", "phi3", "phi4"}  # role alternation enforced, or tool dropped
# The way each family's mask is made (TRL has no Llama 3.1/3.2 copy; prefix diff is exact there).
MASK_METHOD = {
    "llama3": MaskMethod.TRL, "llama3_1": MaskMethod.PREFIX_DIFF,
    "llama3_2": MaskMethod.PREFIX_DIFF, "qwen2_5": MaskMethod.TRL, "qwen3": MaskMethod.RULE,
    "mistral": MaskMethod.RULE, "gemma2": MaskMethod.TRL, "gemma3": MaskMethod.TRL,
    "phi3": MaskMethod.TRL, "phi4": MaskMethod.RULE,
}
NATIVE_TOOLS = {"llama3_1", "llama3_2", "qwen2_5", "qwen3", "mistral"}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}]


def conversation(family: str) -> SftExample:
    """Multi-turn, a weight-0 assistant turn, a system prompt and a tool call where the
    family's template can render them."""
    messages: list[dict] = []
    if family not in NO_SYSTEM:
        messages.append({"role": "system", "content": "You answer briefly."})
    messages += [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "It is 5.", "weight": 0},
        {"role": "user", "content": "Wrong. Again?"},
        {"role": "assistant", "content": "It is 4.\nSorry."},
    ]
    tools = None
    if family not in NO_TOOL_ROLE:
        tools = TOOLS
        messages += [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call00042", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call00042", "content": '{"temp_c": 21}'},
        ]
    messages.append({"role": "assistant", "content": "Sunny, 21 degrees."} if tools else
                    {"role": "user", "content": "Thanks!"})
    if not tools:
        messages.append({"role": "assistant", "content": "You're welcome."})
    return SftExample(messages=messages, tools=tools, line=1)


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny_model(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def formatters(family_dirs) -> dict[str, ChatFormatter]:
    from trainer.modeling import load_tokenizer

    return {f: ChatFormatter.for_tokenizer(load_tokenizer(d)) for f, d in family_dirs.items()}


def expected_labels(formatter: ChatFormatter, family: str, example: SftExample) -> tuple:
    """(input_ids, labels) from the stock rendering: each weighted assistant turn's tokens
    from its opening to its end-of-turn token, inclusive."""
    tokenizer = formatter.tokenizer
    msgs, tools = formatter.template_messages(example.messages, example.tools)
    text = tokenizer.apply_chat_template(msgs, tools=tools, tokenize=False)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    opening, end_of_turn = ASSISTANT_TURN[family]
    weights = [m.get("weight", 1) for m in example.messages if m["role"] == "assistant"]
    starts = [m.end() for m in re.finditer(opening, text)]
    assert len(starts) == len(weights), (family, text)
    labels = [IGNORE_INDEX] * len(enc["input_ids"])
    for start, weight in zip(starts, weights, strict=True):
        end = text.index(end_of_turn, start) + len(end_of_turn)
        if weight:
            for t, (a, b) in enumerate(enc["offset_mapping"]):
                if b > start and a < end:
                    labels[t] = enc["input_ids"][t]
    return list(enc["input_ids"]), labels


@pytest.mark.parametrize("family", FAMILIES)
def test_label_mask_is_exactly_the_assistant_turns(family, formatters):
    formatter = formatters[family]
    assert formatter.mask_method == MASK_METHOD[family]
    example = conversation(family)
    encoded = formatter.encode_sft(example)
    input_ids, labels = expected_labels(formatter, family, example)
    assert encoded["input_ids"] == input_ids  # byte-identical rendering, no extra bos
    assert encoded["labels"] == labels
    tokenizer = formatter.tokenizer
    trained = [t for t in encoded["labels"] if t != IGNORE_INDEX]
    end_of_turn = tokenizer.convert_tokens_to_ids(ASSISTANT_TURN[family][1])
    n_trained_turns = sum(1 for m in example.messages
                          if m["role"] == "assistant" and m.get("weight", 1))
    assert trained.count(end_of_turn) == n_trained_turns  # every trained turn learns to stop
    assert "It is 5." not in tokenizer.decode(trained)  # the weight-0 turn
    if tokenizer.bos_token_id is not None:
        assert input_ids.count(tokenizer.bos_token_id) <= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_pad_is_never_the_stop_token_when_the_release_leaves_it_unset(family, family_dirs,
                                                                      formatters):
    tokenizer = formatters[family].tokenizer
    config = json.loads((family_dirs[family] / "tokenizer_config.json").read_text())
    assert tokenizer.pad_token is not None
    if config.get("pad_token") is None:
        assert tokenizer.pad_token_id not in formatters[family].stop_ids
    else:
        assert tokenizer.pad_token == config["pad_token"]
    expected_pad = {"llama3_1": "<|finetune_right_pad_id|>", "llama3_2":
                    "<|finetune_right_pad_id|>", "qwen2_5": "<|endoftext|>", "mistral": "<unk>",
                    "gemma2": "<pad>", "phi4": "<|dummy_85|>"}
    if family in expected_pad:
        assert tokenizer.pad_token == expected_pad[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_loads_trains_on_the_labels_and_stops_on_its_end_of_turn(family, family_dirs,
                                                                          formatters):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(family_dirs[family]), dtype=torch.float32)
    encoded = formatters[family].encode_sft(conversation(family))
    out = model(input_ids=torch.tensor([encoded["input_ids"]]),
                labels=torch.tensor([encoded["labels"]]))
    assert torch.isfinite(out.loss)
    end_of_turn = formatters[family].tokenizer.convert_tokens_to_ids(ASSISTANT_TURN[family][1])
    assert end_of_turn in model.generation_config.eos_token_id
    assert end_of_turn in formatters[family].stop_ids


@pytest.mark.parametrize("family", ["llama3_1", "qwen2_5", "mistral"])
def test_tool_calls_render_in_the_family_native_format(family, formatters):
    formatter = formatters[family]
    assert formatter.native_tools
    example = conversation(family)
    encoded = formatter.encode_sft(example)
    trained = formatter.tokenizer.decode(
        [t for t in encoded["labels"] if t != IGNORE_INDEX], skip_special_tokens=False)
    native_call = {
        "llama3_1": '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>',
        "qwen2_5": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
                   "</tool_call><|im_end|>",
        "mistral": '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}, '
                   '"id": "call00042"}]</s>',
    }[family]
    assert native_call in trained
    assert "<tool_call>" not in trained or family == "qwen2_5"  # no Hermes fallback


@pytest.mark.parametrize(("family", "change", "reason"), [
    ("mistral", "system", "drops message 1 (system)"),
    ("gemma2", "system", "System role not supported"),
    ("phi3", "tool", "drops message 8 (tool)"),
])
def test_conversations_a_template_cannot_render_fail_clearly(family, change, reason,
                                                             formatters):
    example = conversation(family)
    if change == "system":
        example.messages.insert(0, {"role": "system", "content": "You answer briefly."})
    else:
        example.messages[-2:] = [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Let me check."},
            {"role": "tool", "content": '{"temp_c": 21}'},
            {"role": "assistant", "content": "Sunny."},
        ]
    with pytest.raises(MaskError) as caught:
        formatters[family].encode_sft(example)
    assert repr(family) in str(caught.value) and reason in str(caught.value)


def test_qwen3_trains_the_last_turn_reasoning_and_refuses_reasoning_it_would_drop(formatters):
    formatter = formatters["qwen3"]
    last = SftExample(messages=[
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "<think>\nadd them\n</think>\n\n4"},
    ])
    encoded = formatter.encode_sft(last)
    trained = formatter.tokenizer.decode([t for t in encoded["labels"] if t != IGNORE_INDEX],
                                         skip_special_tokens=False)
    assert trained == "<think>\nadd them\n</think>\n\n4<|im_end|>"
    earlier = SftExample(messages=[*last.messages, {"role": "user", "content": "3+3?"},
                                   {"role": "assistant", "content": "6"}])
    with pytest.raises(MaskError, match="assistant turn 1 is rendered without part of its"):
        formatter.encode_sft(earlier)


def test_template_rewriting_earlier_turns_fails_at_validation(family_dirs, tmp_path):
    """A template that drops earlier reasoning has no training copy and defeats prefix diff:
    the worker's validation refuses the file with a message naming the model and why."""
    from trainer.data import load_dataset_file
    from trainer.data_report import build_report
    from trainer.errors import DataError
    from trainer.modeling import load_tokenizer
    from tuneforge.domain import MethodType

    model = tmp_path / "Reasoner-1B"
    model.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        (model / name).write_bytes((family_dirs["qwen2_5"] / name).read_bytes())
    (model / "chat_template.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and not loop.last %}{{ m.content.split('</think>')[-1] }}"
        "{% else %}{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    rows = [{"messages": [
        {"role": "user", "content": "a?"},
        {"role": "assistant", "content": "<think>hmm</think>A."},
        {"role": "user", "content": "b?"},
        {"role": "assistant", "content": "<think>hm</think>B."},
    ]}] * 10
    data_file = tmp_path / "train.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset_file(data_file, MethodType.SUPERVISED)
    with pytest.raises(DataError) as caught:
        build_report(data, load_tokenizer(model), 256)
    message = caught.value.message
    assert caught.value.code == "invalid_training_file" and caught.value.line == 1
    assert message.startswith("line 1: ") and "'Reasoner-1B'" in message
    assert "earlier turns are rewritten" in message and str(tmp_path) not in message


@pytest.mark.train
@pytest.mark.parametrize("family", ["llama3_1", "qwen2_5"])
def test_lora_training_learns_and_merges(family, family_dirs, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from tests.trainer.conftest import Recorder, make_spec
    from trainer.samples import arithmetic_chat, write_jsonl
    from trainer.train import train
    from tuneforge.domain import LoraConfig

    train_file = write_jsonl(arithmetic_chat(16, seed=3), tmp_path / "train.jsonl")
    recorder = Recorder()
    # Random weights: a high LoRA scale (alpha/r = 8) so that a few steps show learning.
    spec = make_spec(n_epochs=2, batch_size=4, learning_rate_multiplier=10)
    spec = spec.model_copy(update={"lora": LoraConfig(alpha=128, quantization="none")})
    result = train(spec, family_dirs[family], train_file, None, tmp_path / "out",
                   recorder.callbacks(), served_model_name=family, max_length=96)
    assert result.status == "succeeded"
    losses = recorder.losses()
    assert sum(losses[-2:]) / 2 < 0.8 * sum(losses[:2]) / 2, losses
    assert any("Loss mask:" in message for message, _ in recorder.messages)
    merged = AutoModelForCausalLM.from_pretrained(str(result.merged_dir), dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(str(family_dirs[family]), dtype=torch.float32)
    assert type(merged) is type(base)
    changed = [not torch.equal(a, b) for a, b in zip(merged.state_dict().values(),
                                                     base.state_dict().values(), strict=True)]
    assert any(changed)
    adapter = json.loads((result.adapter_dir / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == family

"""Format detection and conversion to chat for every supported shape, and the data report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.data import DataFormat, DpoExample, SftExample, build_report, load_dataset_file
from trainer.encode import IGNORE_INDEX, ChatFormatter
from tuneforge.domain import MethodType

SFT = MethodType.SUPERVISED
DPO = MethodType.DPO


@pytest.mark.parametrize(
    ("name", "method", "fmt", "n"),
    [
        ("openai_chat", SFT, DataFormat.OPENAI_CHAT, 4),
        ("alpaca", SFT, DataFormat.ALPACA, 3),
        ("prompt_completion", SFT, DataFormat.PROMPT_COMPLETION, 2),
        ("openai_preference", DPO, DataFormat.OPENAI_PREFERENCE, 2),
        ("prompt_chosen_rejected", DPO, DataFormat.PROMPT_CHOSEN_REJECTED, 2),
    ],
)
def test_detects_each_format(data_dir, name, method, fmt, n):
    data = load_dataset_file(data_dir / f"{name}.jsonl", method, min_examples=1)
    assert data.format == fmt
    assert data.method == method
    assert len(data) == n
    assert [e.line for e in data.examples] == list(range(1, n + 1))


def test_openai_chat_conversion(data_dir):
    data = load_dataset_file(data_dir / "openai_chat.jsonl", SFT, min_examples=1)
    first, weighted, parts, tools = data.examples
    assert isinstance(first, SftExample)
    assert first.messages[0] == {"role": "system", "content": "Be brief."}
    assert [m.get("weight") for m in weighted.messages if m["role"] == "assistant"] == [0, 1]
    assert parts.messages[0]["content"] == "Two parts"
    assert tools.tools[0]["function"]["name"] == "get_weather"
    call = tools.messages[1]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather" and tools.messages[1]["content"] == ""
    assert tools.messages[2] == {
        "role": "tool",
        "content": '{"temp_c": 21}',
        "tool_call_id": "call_1",
    }


def test_alpaca_conversion(data_dir):
    data = load_dataset_file(data_dir / "alpaca.jsonl", SFT, min_examples=1)
    translate, color, summarize = data.examples
    assert translate.messages == [
        {"role": "user", "content": "Translate to French\n\ncat"},
        {"role": "assistant", "content": "chat"},
    ]
    assert color.messages[0] == {"role": "user", "content": "Name a color"}
    assert summarize.messages[0] == {"role": "system", "content": "You summarize."}


def test_prompt_completion_conversion(data_dir):
    data = load_dataset_file(data_dir / "prompt_completion.jsonl", SFT, min_examples=1)
    text, conversational = data.examples
    assert text.messages == [
        {"role": "user", "content": "Complete: 1, 2, 3,"},
        {"role": "assistant", "content": " 4"},
    ]
    assert conversational.messages[-1] == {"role": "assistant", "content": "Hello!"}


def test_preference_conversions(data_dir):
    openai = load_dataset_file(data_dir / "openai_preference.jsonl", DPO, min_examples=1)
    trl = load_dataset_file(data_dir / "prompt_chosen_rejected.jsonl", DPO, min_examples=1)
    first = openai.examples[1]
    assert isinstance(first, DpoExample)
    assert [m["role"] for m in first.prompt] == ["system", "user"]
    assert first.chosen == {"role": "assistant", "content": "ANSWER: 6"}
    assert first.rejected == {"role": "assistant", "content": "six-ish"}
    text, conversational = trl.examples
    assert text.prompt == [{"role": "user", "content": "Best fruit?"}]
    assert text.chosen == {"role": "assistant", "content": "Mango."}
    assert conversational.rejected == {"role": "assistant", "content": "No."}


def test_weight_zero_turns_carry_no_loss(tokenizer, data_dir):
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    data = load_dataset_file(data_dir / "openai_chat.jsonl", SFT, min_examples=1)
    enc = formatter.encode_sft(data.examples[1])
    trained = tokenizer.decode([t for t in enc["labels"] if t != IGNORE_INDEX])
    assert trained == "Hello there!<|im_end|>"
    assert "Hi!" not in trained
    # Every token outside the trained turn is masked, including the prompt and the weight-0 turn.
    text = tokenizer.decode(enc["input_ids"])
    assert "Hi!<|im_end|>" in text
    n_trained = sum(t != IGNORE_INDEX for t in enc["labels"])
    assert n_trained == len(
        tokenizer("Hello there!<|im_end|>", add_special_tokens=False)["input_ids"]
    )


def test_prefix_diff_fallback_agrees_with_generation_marks(tokenizer, data_dir):
    marked = ChatFormatter.for_tokenizer(tokenizer)
    fallback = ChatFormatter(tokenizer=tokenizer, training_template=None, native_tools=False)
    data = load_dataset_file(data_dir / "openai_chat.jsonl", SFT, min_examples=1)
    for example in data.examples:
        a, b = marked.encode_sft(example), fallback.encode_sft(example)
        assert a["input_ids"] == b["input_ids"]
        # The fallback also trains the newline after <|im_end|>; otherwise identical.
        newline = tokenizer("\n", add_special_tokens=False)["input_ids"]
        extra = [i for i, (x, y) in enumerate(zip(a["labels"], b["labels"], strict=True)) if x != y]
        assert all(a["labels"][i] == IGNORE_INDEX and [b["labels"][i]] == newline for i in extra)


def test_tools_are_folded_into_the_prompt_for_templates_without_tools(tokenizer, data_dir):
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    example = load_dataset_file(data_dir / "openai_chat.jsonl", SFT, min_examples=1).examples[3]
    enc = formatter.encode_sft(example)
    text = tokenizer.decode(enc["input_ids"])
    assert "<tools>" in text and '"get_weather"' in text
    trained = tokenizer.decode([t for t in enc["labels"] if t != IGNORE_INDEX])
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}' in trained
    assert "It is 21 °C in Paris." in trained


def test_dpo_encoding_splits_prompt_and_answers(tokenizer, data_dir):
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    example = load_dataset_file(data_dir / "openai_preference.jsonl", DPO, min_examples=1).examples[
        0
    ]
    enc = formatter.encode_dpo(example)
    assert tokenizer.decode(enc["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(enc["chosen_ids"]).startswith("ANSWER: 4<|im_end|>")
    assert tokenizer.decode(enc["rejected_ids"]).startswith("maybe 5<|im_end|>")


def test_report(tmp_path: Path, tokenizer):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"q{i}"},
                {"role": "assistant", "content": f"a{i}"},
            ]
        }
        for i in range(10)
    ]
    rows.append(rows[2])  # duplicate (line 11)
    rows.append(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "  "}]}
    )
    rows.append(
        {
            "messages": [
                {"role": "user", "content": "long " * 300},
                {"role": "assistant", "content": "x"},
            ]
        }
    )
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = load_dataset_file(path, SFT)
    report = build_report(data, tokenizer, max_length=128)
    assert report["n_examples"] == 13
    assert report["format"] == "openai_chat"
    tpe = report["tokens_per_example"]
    assert tpe["min"] <= tpe["median"] <= tpe["max"] and tpe["max"] > 300
    assert report["n_over_max_length"] == 1 and report["over_max_length_lines"] == [13]
    assert report["n_duplicates"] == 1 and report["duplicate_lines"] == [11]
    assert report["n_empty_assistant"] == 1 and report["empty_assistant_lines"] == [12]
    assert len(report["warnings"]) == 3
    assert any("truncated" in w for w in report["warnings"])


def test_report_for_preferences(data_dir, tokenizer):
    data = load_dataset_file(data_dir / "openai_preference.jsonl", DPO, min_examples=1)
    report = build_report(data, tokenizer, max_length=1024)
    assert report["n_examples"] == 2 and report["warnings"] == []
    assert report["tokens_per_example"]["min"] > 0

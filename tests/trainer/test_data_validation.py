"""Malformed training files: each rule violation is a DataError with its code and line."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from trainer.data import DataError, load_dataset_file
from trainer.errors import INVALID_N_EXAMPLES, INVALID_TRAINING_FILE, INVALID_VALIDATION_FILE
from tuneforge.domain import MethodType

SFT = MethodType.SUPERVISED
DPO = MethodType.DPO


def chat(i: int = 0, **extra) -> dict:
    return {
        "messages": [
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": f"answer {i}"},
        ],
        **extra,
    }


def pref(i: int = 0) -> dict:
    return {
        "input": {"messages": [{"role": "user", "content": f"q{i}"}]},
        "preferred_output": [{"role": "assistant", "content": "good"}],
        "non_preferred_output": [{"role": "assistant", "content": "bad"}],
    }


def write(path: Path, lines: list) -> Path:
    with open(path, "wb") as f:
        for line in lines:
            if isinstance(line, bytes):
                f.write(line + b"\n")
            elif isinstance(line, str):
                f.write(line.encode() + b"\n")
            else:
                f.write(json.dumps(line).encode() + b"\n")
    return path


def valid_prefix(n: int = 3) -> list:
    return [chat(i) for i in range(n)]


def bad_message(**message) -> dict:
    return {"messages": [{"role": "user", "content": "q"}, message]}


# (name, the offending line's value, method, message fragment); the offending line is line 4
CASES = [
    ("not json", "{not json", SFT, "invalid JSON"),
    ("truncated json", '{"messages": [', SFT, "invalid JSON"),
    ("NaN literal", '{"messages": NaN}', SFT, "invalid JSON"),
    ("array line", [1, 2], SFT, "must be a JSON object"),
    ("string line", '"just a string"', SFT, "must be a JSON object"),
    ("unknown shape", {"foo": 1}, SFT, "unrecognized example format"),
    ("messages not list", {"messages": "hi"}, SFT, "must be an array"),
    ("messages empty", {"messages": []}, SFT, "is empty"),
    ("message not object", {"messages": ["hi"]}, SFT, "must be an object"),
    ("missing role", bad_message(content="x"), SFT, "missing role"),
    ("bad role", bad_message(role="robot", content="x"), SFT, "unrecognized role"),
    ("missing content", bad_message(role="assistant"), SFT, "missing content"),
    ("content number", bad_message(role="assistant", content=5), SFT, "content must be"),
    (
        "content image part",
        bad_message(role="assistant", content=[{"type": "image_url"}]),
        SFT,
        "only text is supported",
    ),
    (
        "unknown key",
        bad_message(role="assistant", content="x", mood="happy"),
        SFT,
        "unrecognized key 'mood'",
    ),
    (
        "weight 2",
        bad_message(role="assistant", content="x", weight=2),
        SFT,
        "weight must be 0 or 1",
    ),
    (
        "weight bool",
        bad_message(role="assistant", content="x", weight=True),
        SFT,
        "weight must be 0 or 1",
    ),
    (
        "weight on user",
        {
            "messages": [
                {"role": "user", "content": "q", "weight": 1},
                {"role": "assistant", "content": "a"},
            ]
        },
        SFT,
        "only allowed on assistant",
    ),
    ("no assistant", {"messages": [{"role": "user", "content": "q"}]}, SFT, "no assistant message"),
    ("all weight 0", bad_message(role="assistant", content="x", weight=0), SFT, "weight 0"),
    (
        "tool_calls on user",
        {
            "messages": [
                {"role": "user", "content": "q", "tool_calls": []},
                {"role": "assistant", "content": "a"},
            ]
        },
        SFT,
        "only assistant messages may have tool_calls",
    ),
    (
        "bad tool call",
        bad_message(role="assistant", content=None, tool_calls=[{"type": "x"}]),
        SFT,
        "tool_calls[0]",
    ),
    ("tools not list", chat(tools={"a": 1}), SFT, "tools must be an array"),
    ("tool without name", chat(tools=[{"type": "function", "function": {}}]), SFT, "function.name"),
    ("mixed formats", {"prompt": "p", "completion": "c"}, SFT, "one file must use one format"),
]


@pytest.mark.parametrize(("name", "value", "method", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_rule_violation_names_its_line(tmp_path, name, value, method, fragment):
    path = write(tmp_path / "train.jsonl", [*valid_prefix(3), value, *valid_prefix(8)])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, method)
    err = info.value
    assert err.code == INVALID_TRAINING_FILE
    assert err.line == 4
    assert err.message.startswith("line 4: ")
    assert fragment in err.message


DPO_CASES = [
    (
        "missing non_preferred",
        {k: v for k, v in pref().items() if k != "non_preferred_output"},
        "missing non_preferred_output",
    ),
    ("input not object", {**pref(), "input": "q"}, "input must be an object"),
    (
        "two preferred",
        {
            **pref(),
            "preferred_output": [
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
        },
        "exactly one assistant message",
    ),
    (
        "preferred from user",
        {**pref(), "preferred_output": [{"role": "user", "content": "a"}]},
        "exactly one assistant message",
    ),
    (
        "chosen number",
        {"prompt": "p", "chosen": 1, "rejected": "r"},
        "one file must use one format",
    ),
]


@pytest.mark.parametrize(("name", "value", "fragment"), DPO_CASES, ids=[c[0] for c in DPO_CASES])
def test_preference_rule_violations(tmp_path, name, value, fragment):
    path = write(tmp_path / "train.jsonl", [pref(0), pref(1), pref(2), value, *map(pref, range(8))])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, DPO)
    assert (info.value.code, info.value.line) == (INVALID_TRAINING_FILE, 4)
    assert fragment in info.value.message


def test_alpaca_wrong_type(tmp_path):
    rows = [{"instruction": f"i{i}", "output": f"o{i}"} for i in range(12)]
    rows[6] = {"instruction": "i", "output": 42}
    with pytest.raises(DataError) as info:
        load_dataset_file(write(tmp_path / "a.jsonl", rows), SFT)
    assert info.value.line == 7 and "output must be a string" in info.value.message


def test_method_mismatch_is_reported_on_line_1(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset_file(write(tmp_path / "t.jsonl", [pref(i) for i in range(12)]), SFT)
    assert info.value.line == 1 and "method is supervised" in info.value.message
    with pytest.raises(DataError) as info:
        load_dataset_file(write(tmp_path / "t.jsonl", valid_prefix(12)), DPO)
    assert info.value.line == 1 and "method is dpo" in info.value.message


def test_too_few_examples(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset_file(write(tmp_path / "t.jsonl", valid_prefix(9)), SFT)
    assert info.value.code == INVALID_N_EXAMPLES
    assert info.value.line is None
    assert "9 example(s)" in info.value.message
    load_dataset_file(write(tmp_path / "t.jsonl", valid_prefix(9)), SFT, min_examples=9)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"\n\n   \n")
    with pytest.raises(DataError) as info:
        load_dataset_file(path, SFT, min_examples=0)
    assert info.value.code == INVALID_N_EXAMPLES


def test_validation_file_code(tmp_path):
    path = write(tmp_path / "v.jsonl", [chat(0), "{oops"])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, SFT, min_examples=1, code=INVALID_VALIDATION_FILE)
    assert (info.value.code, info.value.line) == (INVALID_VALIDATION_FILE, 2)


def test_blank_lines_and_bom_are_tolerated(tmp_path):
    path = tmp_path / "t.jsonl"
    body = b"\n".join(json.dumps(chat(i)).encode() for i in range(10))
    path.write_bytes(b"\xef\xbb\xbf" + body.replace(b"}\n", b"}\n\n", 2) + b"\n\n")
    data = load_dataset_file(path, SFT)
    assert len(data) == 10


# -- hostile input ------------------------------------------------------------------------------


def test_invalid_utf8(tmp_path):
    bad = b'{"messages": "\xff\xfe"}'
    path = write(tmp_path / "t.jsonl", [*valid_prefix(4), bad, *valid_prefix(8)])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, SFT)
    assert (info.value.code, info.value.line) == (INVALID_TRAINING_FILE, 5)
    assert "UTF-8" in info.value.message


def test_100_mb_single_line_is_rejected_with_bounded_memory(tmp_path):
    path = tmp_path / "huge.jsonl"
    with open(path, "wb") as f:
        f.write(json.dumps(chat(0)).encode() + b"\n")
        f.write(b'{"messages": [{"role": "user", "content": "')
        chunk = b"a" * (1024 * 1024)
        for _ in range(100):
            f.write(chunk)
        f.write(b'"}]}\n')
    tracemalloc.start()
    try:
        with pytest.raises(DataError) as info:
            load_dataset_file(path, SFT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (info.value.code, info.value.line) == (INVALID_TRAINING_FILE, 2)
    assert "longer than" in info.value.message
    assert peak < 64 * 1024 * 1024


def test_deeply_nested_json(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    path = write(tmp_path / "t.jsonl", [*valid_prefix(2), deep, *valid_prefix(8)])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, SFT)
    assert (info.value.code, info.value.line) == (INVALID_TRAINING_FILE, 3)
    assert "nested" in info.value.message


def test_moderately_nested_json_is_capped(tmp_path):
    value = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    nested: dict = {}
    cursor = nested
    for _ in range(80):
        cursor["x"] = {}
        cursor = cursor["x"]
    value["tools"] = [{"type": "function", "function": {"name": "f", "parameters": nested}}]
    path = write(tmp_path / "t.jsonl", [value, *valid_prefix(10)])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, SFT)
    assert info.value.line == 1 and "nested deeper" in info.value.message


@pytest.mark.parametrize(
    "value",
    [
        {"messages": None},
        {"messages": [None]},
        {"messages": [{"role": None, "content": "x"}]},
        {"messages": [{"role": ["assistant"], "content": "x"}]},
        {"messages": [{"role": "assistant", "content": {"text": "x"}}]},
        {"messages": [{"role": "assistant", "content": "x", "name": 3}]},
        {"messages": [{"role": "assistant", "content": None, "tool_calls": "x"}]},
        {"messages": [{"role": "assistant", "content": "x"}], "tools": [None]},
        {"instruction": None, "output": "x"},
        {"instruction": ["x"], "output": "x"},
        {"prompt": 1, "completion": "x"},
        {"prompt": "p", "completion": [{"role": "user", "content": "x"}]},
    ],
)
def test_wrong_types_never_crash(tmp_path, value):
    path = write(tmp_path / "t.jsonl", [value, *valid_prefix(10)])
    with pytest.raises(DataError) as info:
        load_dataset_file(path, SFT)
    assert info.value.line == 1
    assert info.value.code == INVALID_TRAINING_FILE

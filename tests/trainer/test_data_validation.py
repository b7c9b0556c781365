"""Malformed training files: each rule violation is a DataError with its code and line."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import pytest

from server.service.files import FineTuneFileCheck
from trainer.data import DataError, load_dataset_file, validate_files
from trainer.errors import INVALID_N_EXAMPLES, INVALID_TRAINING_FILE, INVALID_VALIDATION_FILE
from tuneforge.domain import MethodType
from tuneforge.errors import ApiError
from tuneforge.jsonl import MAX_DEPTH, MAX_LINE_BYTES

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


# -- one set of line rules at upload and in the worker ------------------------------------------


def chat_line(i: int, length: int | None = None) -> bytes:
    """A valid chat example as one line of exactly `length` bytes (padded inside a string)."""
    line = json.dumps(chat(i)).encode()
    if length is None:
        return line
    pad = length - len(line)
    return line.replace(b'"question', b'"' + b" " * pad + b"question", 1)


def nested(depth: int) -> bytes:
    """A valid chat example whose tool parameters take the line to `depth` levels."""
    inner = "{}"
    for _ in range(depth - 5):  # line object, tools, tool, function, parameters
        inner = '{"x": ' + inner + "}"
    tools = '[{"type": "function", "function": {"name": "f", "parameters": ' + inner + "}}]"
    return json.dumps(chat(0))[:-1].encode() + b', "tools": ' + tools.encode() + b"}"


def body(*special: bytes, at: int = 4) -> bytes:
    lines = [chat_line(i) for i in range(12)]
    lines[at - 1:at] = list(special)
    return b"\n".join(lines) + b"\n"


# Each file is valid chat data except for the bytes under test, so the worker's structural
# pass has nothing else to reject: upload and worker must agree exactly.
PARITY_FILES = {
    "plain": body(chat_line(3)),
    "bom on line 1": b"\xef\xbb\xbf" + body(chat_line(3)),
    "bom on line 4": body(b"\xef\xbb\xbf" + chat_line(3)),
    "crlf": body(chat_line(3)).replace(b"\n", b"\r\n"),
    "no final newline": body(chat_line(3))[:-1],
    "blank and whitespace lines": body(b"", b" \t\r", chat_line(3)),
    "vertical tab line": body(b"\x0b"),
    "nbsp line": body("\u00a0".encode()),
    "NaN": body(b'{"messages": [], "x": NaN}'),
    "Infinity": body(b'{"x": Infinity, "messages": []}'),
    "-Infinity": body(b'{"x": -Infinity, "messages": []}'),
    "invalid utf-8": body(b'{"messages": "\xff"}'),
    "utf-16 file": body(chat_line(3)).decode().encode("utf-16"),
    "escaped lone surrogate": body(chat_line(3).replace(b"question", b"\\ud800", 1)),
    "array line": body(b"[1, 2]"),
    "null line": body(b"null"),
    "not json": body(b"{oops"),
    "line at the limit": body(chat_line(3, MAX_LINE_BYTES)),
    "line over the limit": body(chat_line(3, MAX_LINE_BYTES + 1)),
    "crlf line at the limit": body(chat_line(3, MAX_LINE_BYTES - 1) + b"\r"),
    "nested to the limit": body(nested(MAX_DEPTH)),
    "nested over the limit": body(nested(MAX_DEPTH + 1)),
    "nested far over the limit": body(b"[" * 100_000 + b"]" * 100_000),
}


def upload_verdict(content: bytes, chunk: int) -> str | None:
    """What the upload's check says of `content` arriving in pieces of `chunk` bytes."""
    check = FineTuneFileCheck()
    try:
        for start in range(0, len(content), chunk):
            check.feed(content[start:start + chunk])
        check.finish()
    except ApiError as exc:
        assert exc.code == "invalid_file_format" and exc.param == "file"
        return exc.message.removeprefix("Invalid file format for fine-tuning: ")
    return None


def worker_verdict(tmp_path: Path, content: bytes) -> str | None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    try:
        load_dataset_file(path, SFT)
    except DataError as exc:
        assert exc.code == INVALID_TRAINING_FILE
        return exc.message
    return None


@pytest.mark.parametrize("name", PARITY_FILES)
def test_upload_and_worker_apply_the_same_line_rules(tmp_path, name):
    content = PARITY_FILES[name]
    worker = worker_verdict(tmp_path, content)
    chunks = [len(content), 65_537, 1_000_003] + ([1, 7] if len(content) < 100_000 else [])
    for chunk in chunks:
        assert upload_verdict(content, chunk) == worker, (name, chunk)


@pytest.mark.parametrize(
    ("name", "line", "reason"),
    [
        ("NaN", 4, "invalid JSON: NaN is not valid JSON"),
        ("-Infinity", 4, "invalid JSON: -Infinity is not valid JSON"),
        ("line over the limit", 4, f"line is longer than {MAX_LINE_BYTES} bytes"),
        ("nested over the limit", 4, f"JSON is nested deeper than {MAX_DEPTH} levels"),
        ("bom on line 4", 4, "invalid JSON: a byte order mark is only allowed at the start"),
        ("invalid utf-8", 4, "not valid UTF-8"),
        ("utf-16 file", 1, "not valid UTF-8"),
    ],
)
def test_what_both_refuse_names_the_line(tmp_path, name, line, reason):
    message = worker_verdict(tmp_path, PARITY_FILES[name])
    assert message is not None and message.startswith(f"line {line}: {reason}")


@pytest.mark.parametrize(
    "name",
    ["plain", "bom on line 1", "crlf", "no final newline", "blank and whitespace lines",
     "line at the limit", "crlf line at the limit", "nested to the limit"],
)
def test_what_both_accept(tmp_path, name):
    assert worker_verdict(tmp_path, PARITY_FILES[name]) is None


def test_a_shape_error_is_left_to_the_worker(tmp_path):
    """The upload checks lines, not example shapes (OpenAI checks those while the job is
    `validating_files`): the worker then refuses for a reason the upload never judges."""
    content = body(b'{"messages": [{"role": "user", "content": "no reply"}]}')
    assert upload_verdict(content, len(content)) is None
    assert worker_verdict(tmp_path, content) == "line 4: example has no assistant message"


# -- training takes the validation's examples ---------------------------------------------------


def test_training_takes_what_validation_produced_without_reading_the_file(tmp_path, tokenizer):
    """The worker validates once and hands the examples to training: the files may be gone."""
    from tests.trainer.conftest import make_spec
    from trainer.encode import ChatFormatter
    from trainer.train import _load_data

    train_path = write(tmp_path / "train.jsonl", valid_prefix(12))
    valid_path = write(tmp_path / "valid.jsonl", valid_prefix(2))
    files = validate_files(train_path, valid_path, SFT)
    train_path.unlink()
    valid_path.unlink()
    said: list[str] = []
    data = _load_data(make_spec(), ChatFormatter.for_tokenizer(tokenizer), train_path,
                      valid_path, 256, lambda message, level="info": said.append(message),
                      files)
    assert data.n_train == 12 and len(data.valid) == 2
    assert said[0].startswith("Training data: 12 examples")


def test_a_validation_file_error_names_the_validation_file(tmp_path):
    train_path = write(tmp_path / "train.jsonl", valid_prefix(12))
    valid_path = write(tmp_path / "valid.jsonl", [*valid_prefix(2), "{oops"])
    with pytest.raises(DataError) as info:
        validate_files(train_path, valid_path, SFT)
    assert (info.value.code, info.value.line) == (INVALID_VALIDATION_FILE, 3)
    empty = write(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError) as info:
        validate_files(train_path, empty, SFT)
    assert info.value.code == INVALID_VALIDATION_FILE


def test_the_method_decides_the_format(tmp_path):
    path = write(tmp_path / "train.jsonl", valid_prefix(12))
    with pytest.raises(DataError) as info:
        validate_files(path, None, DPO)
    assert info.value.line == 1 and "method is dpo" in info.value.message

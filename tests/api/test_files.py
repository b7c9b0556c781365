"""Files API through the official openai SDK against the real server, S3 and database."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import openai
import pytest

from tests.api.data import chat_jsonl
from trainer.data import DataError, load_dataset_file
from tuneforge.domain import MethodType
from tuneforge.jsonl import MAX_LINE_BYTES


def upload(client: openai.OpenAI, content: bytes, name: str = "train.jsonl",
           purpose: str = "fine-tune"):  # type: ignore[no-untyped-def]
    return client.files.create(file=(name, io.BytesIO(content)), purpose=purpose)  # type: ignore[arg-type]


def test_upload_retrieve_list_content_delete(client: openai.OpenAI) -> None:
    content = chat_jsonl()
    created = upload(client, content)
    assert created.id.startswith("file-")
    assert created.object == "file"
    assert created.bytes == len(content)
    assert created.filename == "train.jsonl"
    assert created.purpose == "fine-tune"

    assert client.files.retrieve(created.id) == created
    assert created.id in [f.id for f in client.files.list()]
    assert client.files.content(created.id).read() == content

    deleted = client.files.delete(created.id)
    assert deleted.deleted is True and deleted.id == created.id
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(created.id)
    assert err.value.code == "not_found"


def test_list_paginates_and_filters_by_purpose(client: openai.OpenAI) -> None:
    ids = [upload(client, b'{"a": 1}\n', name=f"n{i}.jsonl").id for i in range(3)]
    other = upload(client, b"plain text", name="notes.txt", purpose="user_data").id
    first = client.files.list(purpose="fine-tune", limit=2, order="desc")
    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more is True
    second = client.files.list(purpose="fine-tune", limit=2, order="desc", after=ids[1])
    assert second.data[0].id == ids[0]
    assert other not in [f.id for f in client.files.list(purpose="fine-tune")]
    ascending = client.files.list(order="asc", after=ids[0], limit=3)
    assert [f.id for f in ascending.data] == [*ids[1:], other]


@pytest.mark.parametrize(
    ("content", "expected_line"),
    [(b'{"ok": 1}\n{"broken": \n', 2), (b'{"ok": 1}\n\n[1, 2]\n', 3),
     (b'{"ok": 1}\n\xff\xfe\n', 2)],
)
def test_invalid_jsonl_names_the_line_and_stores_nothing(
    client: openai.OpenAI, content: bytes, expected_line: int
) -> None:
    before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError) as err:
        upload(client, content)
    assert err.value.code == "invalid_file_format"
    assert err.value.param == "file"
    assert f"line {expected_line}:" in err.value.message
    assert {f.id for f in client.files.list()} == before


def _with_line_4(line: bytes) -> bytes:
    lines = chat_jsonl().splitlines()
    lines[3] = line
    return b"\n".join(lines) + b"\n"


def _worker_message(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "train.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError) as err:
        load_dataset_file(path, MethodType.SUPERVISED)
    return err.value.message


@pytest.mark.parametrize(
    ("line", "reason"),
    [(b'{"messages": [], "temperature": NaN}', "invalid JSON: NaN is not valid JSON"),
     (b'{"messages": "' + b"a" * MAX_LINE_BYTES + b'"}',
      f"line is longer than {MAX_LINE_BYTES} bytes")],
    ids=["NaN", "over-long line"],
)
def test_upload_refuses_what_the_worker_refuses_with_the_same_message(
    client: openai.OpenAI, tmp_path: Path, line: bytes, reason: str
) -> None:
    content = _with_line_4(line)
    worker = _worker_message(tmp_path, content)
    assert worker == f"line 4: {reason}"
    before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError) as err:
        upload(client, content)
    assert (err.value.code, err.value.param) == ("invalid_file_format", "file")
    assert err.value.body["message"] == f"Invalid file format for fine-tuning: {worker}"  # type: ignore[index]
    assert {f.id for f in client.files.list()} == before


def test_bad_purpose_and_extension(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        upload(client, b'{"a": 1}\n', purpose="nonsense")
    assert err.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as err:
        upload(client, b'{"a": 1}\n', name="train.csv")
    assert err.value.code == "invalid_file_format"


def test_auth_required(api_server, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    response = httpx.get(f"{api_server.base_url}/files")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    bad = openai.OpenAI(base_url=api_server.base_url, api_key="tf-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.files.list()


def test_tenants_cannot_see_each_others_files(client: openai.OpenAI,
                                              client_b: openai.OpenAI) -> None:
    mine = upload(client, chat_jsonl())
    for call in (client_b.files.retrieve, client_b.files.delete, client_b.files.content):
        with pytest.raises(openai.NotFoundError):
            call(mine.id)
    assert mine.id not in [f.id for f in client_b.files.list()]
    assert client.files.retrieve(mine.id).id == mine.id

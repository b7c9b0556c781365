"""Uploads API (parts → S3 → one File) through the official openai SDK."""

from __future__ import annotations

import hashlib
import io
import os

import openai
import pytest

from tests.api.data import chat_jsonl

MIB = 1024 * 1024


def test_upload_in_parts_completes_in_the_given_order(client: openai.OpenAI) -> None:
    content = chat_jsonl(40)
    pieces = [content[:100], content[100:250], content[250:]]
    upload = client.uploads.create(bytes=len(content), filename="big.jsonl",
                                   mime_type="text/jsonl", purpose="fine-tune")
    assert upload.status == "pending" and upload.expires_at > upload.created_at
    parts = [client.uploads.parts.create(upload.id, data=piece) for piece in pieces]
    assert all(p.object == "upload.part" and p.upload_id == upload.id for p in parts)
    done = client.uploads.complete(upload.id, part_ids=[p.id for p in parts],
                                   md5=hashlib.md5(content).hexdigest())
    assert done.status == "completed"
    assert done.file is not None and done.file.bytes == len(content)
    assert done.file.purpose == "fine-tune" and done.file.filename == "big.jsonl"
    assert client.files.content(done.file.id).read() == content


def test_large_parts_are_composed_server_side(client: openai.OpenAI) -> None:
    first, second = os.urandom(6 * MIB), os.urandom(1234)
    upload = client.uploads.create(bytes=len(first) + len(second), filename="blob.bin",
                                   mime_type="application/octet-stream", purpose="user_data")
    # Parts arrive out of order; part_ids fix the order.
    p2 = client.uploads.parts.create(upload.id, data=second)
    p1 = client.uploads.parts.create(upload.id, data=first)
    done = client.uploads.complete(upload.id, part_ids=[p1.id, p2.id])
    assert done.file is not None
    assert client.files.content(done.file.id).read() == first + second


def test_complete_checks_bytes_md5_and_parts(client: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=10, filename="x.txt", mime_type="text/plain",
                                   purpose="user_data")
    part = client.uploads.parts.create(upload.id, data=b"0123456789")
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[part.id], md5="0" * 32)
    assert err.value.param == "md5"
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[part.id, part.id])
    assert err.value.param == "part_ids"
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=["part_unknown"])
    assert err.value.param == "part_ids"
    short = client.uploads.create(bytes=11, filename="y.txt", mime_type="text/plain",
                                  purpose="user_data")
    short_part = client.uploads.parts.create(short.id, data=b"0123456789")
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(short.id, part_ids=[short_part.id])
    assert err.value.code == "bytes_mismatch"
    # A failed completion leaves the upload pending; a correct one still succeeds.
    done = client.uploads.complete(upload.id, part_ids=[part.id],
                                   md5=hashlib.md5(b"0123456789").hexdigest())
    assert done.status == "completed"


def test_invalid_jsonl_is_refused_at_completion(client: openai.OpenAI) -> None:
    content = b'{"ok": 1}\n{"ok": 2}\nnot json\n'
    upload = client.uploads.create(bytes=len(content), filename="t.jsonl",
                                   mime_type="text/jsonl", purpose="fine-tune")
    part = client.uploads.parts.create(upload.id, data=content)
    files_before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=[part.id])
    assert "line 3:" in err.value.message
    assert {f.id for f in client.files.list()} == files_before


def test_nan_is_refused_at_completion_with_the_line(client: openai.OpenAI) -> None:
    lines = chat_jsonl().splitlines()
    lines[4] = b'{"messages": [], "x": Infinity}'
    content = b"\n".join(lines) + b"\n"
    upload = client.uploads.create(bytes=len(content), filename="t.jsonl",
                                   mime_type="text/jsonl", purpose="fine-tune")
    cut = content.index(b"Infinity") + 3  # the refused line spans both parts
    parts = [client.uploads.parts.create(upload.id, data=piece).id
             for piece in (content[:cut], content[cut:])]
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.complete(upload.id, part_ids=parts)
    assert err.value.code == "invalid_file_format"
    assert err.value.body["message"] == (  # type: ignore[index]
        "Invalid file format for fine-tuning: line 5: invalid JSON: Infinity is not valid JSON")


def test_cancel_and_states(client: openai.OpenAI, client_b: openai.OpenAI) -> None:
    upload = client.uploads.create(bytes=3, filename="c.txt", mime_type="text/plain",
                                   purpose="user_data")
    with pytest.raises(openai.NotFoundError):
        client_b.uploads.cancel(upload.id)
    with pytest.raises(openai.NotFoundError):
        client_b.uploads.parts.create(upload.id, data=b"abc")
    assert client.uploads.cancel(upload.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.uploads.parts.create(upload.id, data=b"abc")
    with pytest.raises(openai.ConflictError):
        client.uploads.complete(upload.id, part_ids=[])


async def test_expired_uploads_refuse_parts_and_lose_their_parts(
    client: openai.OpenAI, services  # type: ignore[no-untyped-def]
) -> None:
    from sqlalchemy import update

    from server.db.models import Upload

    upload = client.uploads.create(bytes=3, filename="e.txt", mime_type="text/plain",
                                   purpose="user_data")
    client.uploads.parts.create(upload.id, data=b"abc")
    assert await services.ctx.store.list_keys(f"uploads/{upload.id}/")
    async with services.ctx.sessions() as session, session.begin():
        await session.execute(update(Upload).where(Upload.id == upload.id)
                              .values(expires_at=upload.created_at - 1))
    assert await services.uploads.expire_due() >= 1
    with pytest.raises(openai.ConflictError) as err:
        client.uploads.parts.create(upload.id, data=b"abc")
    assert "expired" in err.value.message
    assert await services.ctx.store.list_keys(f"uploads/{upload.id}/") == []


def test_upload_create_validates(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.create(bytes=10, filename="x.txt", mime_type="text/plain",
                              purpose="bogus")  # type: ignore[arg-type]
    assert err.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as err:
        client.uploads.create(bytes=0, filename="x.txt", mime_type="text/plain",
                              purpose="user_data")
    assert err.value.param == "bytes"
    with pytest.raises(openai.APIStatusError) as err:
        client.uploads.create(bytes=10**13, filename="x.txt", mime_type="text/plain",
                              purpose="user_data")
    assert err.value.status_code == 413


def test_file_create_reads_purpose_before_file(client: openai.OpenAI) -> None:
    # The SDK sends `purpose` first; a client that sends only the file gets a clear error.
    import httpx

    response = httpx.post(
        str(client.base_url) + "files", files={"file": ("a.jsonl", io.BytesIO(b'{"a":1}\n'))},
        headers={"Authorization": f"Bearer {client.api_key}"}, timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "purpose"

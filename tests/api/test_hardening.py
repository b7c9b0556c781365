"""REST hardening (issue 10, "Low"): hostile or unusual requests get 400s, never 500s, and
what the server accepts round-trips. Real server, real HTTP; multipart bodies built by hand
where a client library would not send them."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.data import chat_jsonl
from tests.conftest import ApiServer, Tenant


@pytest.fixture
def http(api_server: ApiServer, tenant_a: Tenant):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=api_server.base_url,
                      headers={"Authorization": f"Bearer {tenant_a.api_key}"},
                      timeout=30) as c:
        yield c


def _error(response: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error  # type: ignore[no-any-return]


# ---- over-deep JSON ---------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [100_000, 1_000, 65])
@pytest.mark.parametrize("path", ["/fine_tuning/jobs", "/uploads"])
def test_over_deep_json_body_is_a_400(http: httpx.Client, path: str, depth: int) -> None:
    body = '{"model": ' + "[" * depth + "]" * depth + "}"
    error = _error(http.post(path, content=body, headers={"Content-Type": "application/json"}))
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "json_too_deep"
    assert "nested too deeply" in error["message"]


def test_over_deep_json_to_the_inference_proxy_is_a_400(http: httpx.Client) -> None:
    # The proxy decodes the body itself (its own 400, or the app-wide RecursionError handler).
    body = '{"model": "m", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    error = _error(http.post("/chat/completions", content=body,
                             headers={"Content-Type": "application/json"}))
    assert error["type"] == "invalid_request_error"


def test_json_at_the_depth_limit_is_parsed_normally(http: httpx.Client) -> None:
    # 64 levels in all (the body object is level 1): an ordinary validation error, not depth.
    body = '{"model": ' + "[" * 63 + "]" * 63 + ', "training_file": "file-x"}'
    error = _error(http.post("/fine_tuning/jobs", content=body,
                             headers={"Content-Type": "application/json"}))
    assert error["code"] != "json_too_deep"
    assert error["param"] == "model"


# ---- metadata filters on the job list ----------------------------------------------------------

@pytest.mark.parametrize("count", [17, 1_000])
def test_too_many_metadata_filters_is_a_400(http: httpx.Client, count: int) -> None:
    params = {f"metadata[k{i}]": "v" for i in range(count)}
    error = _error(http.get("/fine_tuning/jobs", params=params))
    assert error["param"] == "metadata"
    assert error["code"] == "too_many_metadata_filters"


def test_sixteen_metadata_filters_are_fine(http: httpx.Client) -> None:
    params = {f"metadata[k{i}]": "v" for i in range(16)}
    response = http.get("/fine_tuning/jobs", params=params)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == []


# ---- multipart filenames -----------------------------------------------------------------------

BOUNDARY = "tuneforge-test-boundary"


def _multipart(*parts: tuple[bytes, bytes]) -> tuple[bytes, dict[str, str]]:
    """`parts`: (raw Content-Disposition value, body)."""
    body = b"".join(
        b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disposition + b"\r\n\r\n"
        + content + b"\r\n" for disposition, content in parts
    ) + b"--" + BOUNDARY.encode() + b"--\r\n"
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def _upload_raw(http: httpx.Client, filename_params: bytes,
                *extra: tuple[bytes, bytes]) -> httpx.Response:
    body, headers = _multipart(
        (b'form-data; name="purpose"', b"fine-tune"),
        (b'form-data; name="file"; ' + filename_params, chat_jsonl(2)),
        *extra,
    )
    return http.post("/files", content=body, headers=headers)


def _file_ids(http: httpx.Client) -> set[str]:
    return {f["id"] for f in http.get("/files").json()["data"]}


@pytest.mark.parametrize("name", ["données ünïcødé.jsonl", "学習データ.jsonl", "😀 emoji.jsonl"])
def test_utf8_filename_round_trips_through_the_openai_sdk(
    client: openai.OpenAI, http: httpx.Client, name: str
) -> None:
    created = client.files.create(file=(name, io.BytesIO(chat_jsonl(2))), purpose="fine-tune")
    assert created.filename == name
    assert http.get(f"/files/{created.id}").json()["filename"] == name
    client.files.delete(created.id)


def test_raw_utf8_filename_parameter(http: httpx.Client) -> None:
    name = "Ωmega \u2013 train.jsonl"
    response = _upload_raw(http, b'filename="' + name.encode() + b'"')
    assert response.status_code == 200, response.text
    file_id = response.json()["id"]
    assert http.get(f"/files/{file_id}").json()["filename"] == name
    http.delete(f"/files/{file_id}")


def test_rfc5987_filename_star_wins(http: httpx.Client) -> None:
    response = _upload_raw(
        http, b'filename="fallback.jsonl"; filename*=UTF-8\'\'%E6%97%A5%E6%9C%AC%20data.jsonl')
    assert response.status_code == 200, response.text
    file_id = response.json()["id"]
    assert response.json()["filename"] == "日本 data.jsonl"
    assert http.get(f"/files/{file_id}").json()["filename"] == "日本 data.jsonl"
    http.delete(f"/files/{file_id}")


def test_malformed_filename_star_is_a_400(http: httpx.Client) -> None:
    error = _error(_upload_raw(http, b"filename*=UTF-8%E6%97%A5.jsonl"))
    assert error["param"] == "file"


@pytest.mark.parametrize("raw", [b"a\x00b.jsonl", b"tab\there.jsonl", b"bell\x07.jsonl",
                                 b"del\x7f.jsonl", "c1\u0085.jsonl".encode()])
def test_filename_with_control_characters_is_refused(http: httpx.Client, raw: bytes) -> None:
    before = _file_ids(http)
    error = _error(_upload_raw(http, b'filename="' + raw + b'"'))
    assert error["param"] == "file"
    assert error["code"] == "invalid_filename"
    assert _file_ids(http) == before


def test_second_file_part_is_refused_and_nothing_is_stored(http: httpx.Client) -> None:
    before = _file_ids(http)
    error = _error(_upload_raw(
        http, b'filename="one.jsonl"',
        (b'form-data; name="file"; filename="two.jsonl"', chat_jsonl(3)),
    ))
    assert error["param"] == "file"
    assert error["code"] == "duplicate_file"
    assert _file_ids(http) == before


def test_text_fields_after_the_file_are_still_fine(http: httpx.Client) -> None:
    response = _upload_raw(http, b'filename="ok.jsonl"', (b'form-data; name="note"', b"x"))
    assert response.status_code == 200, response.text
    http.delete(f"/files/{response.json()['id']}")


def test_second_upload_data_part_is_refused(http: httpx.Client) -> None:
    upload = http.post("/uploads", json={"bytes": 20, "filename": "u.jsonl",
                                         "mime_type": "text/jsonl", "purpose": "fine-tune"})
    assert upload.status_code == 200, upload.text
    body, headers = _multipart((b'form-data; name="data"; filename="blob"', b"x" * 10),
                               (b'form-data; name="data"; filename="blob"', b"y" * 10))
    error = _error(http.post(f"/uploads/{upload.json()['id']}/parts", content=body,
                             headers=headers))
    assert error["param"] == "data"
    http.post(f"/uploads/{upload.json()['id']}/cancel")


def test_upload_filename_with_control_characters_is_refused(http: httpx.Client) -> None:
    error = _error(http.post("/uploads", json={"bytes": 20, "filename": "a\u0000.jsonl",
                                               "mime_type": "text/jsonl",
                                               "purpose": "fine-tune"}))
    assert error["param"] == "filename"


# ---- lora.target_modules -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def training_file(api_server: ApiServer, tenant_a: Tenant) -> str:
    with openai.OpenAI(base_url=api_server.base_url, api_key=tenant_a.api_key,
                       max_retries=0) as c:
        return c.files.create(file=("t.jsonl", io.BytesIO(chat_jsonl())),
                              purpose="fine-tune").id


def _create(http: httpx.Client, training_file: str, targets: Any) -> httpx.Response:
    return http.post("/fine_tuning/jobs", json={
        "model": "SmolLM2-135M-Instruct", "training_file": training_file,
        "lora": {"rank": 8, "target_modules": targets}})


@pytest.mark.parametrize(("targets", "code"), [
    ([], "invalid_target_modules"),
    (["q_proj", ""], "invalid_target_modules"),
    (["self_attn..q_proj"], "invalid_target_modules"),
    (["q_projj"], "unknown_target_modules"),
    (["attn.c_attn"], "unknown_target_modules"),
    (["input_layernorm"], "unknown_target_modules"),
])
def test_bad_target_modules_are_refused_at_creation(
    http: httpx.Client, training_file: str, targets: list[str], code: str
) -> None:
    error = _error(_create(http, training_file, targets))
    assert error["param"] == "lora.target_modules"
    assert error["code"] == code


@pytest.mark.parametrize("targets", [
    "all-linear", ["q_proj", "v_proj"], ["self_attn.o_proj", "mlp.down_proj", "lm_head"],
    ["model.layers.0.self_attn.k_proj", "embed_tokens"],
])
def test_real_target_modules_are_accepted(
    http: httpx.Client, training_file: str, targets: Any
) -> None:
    response = _create(http, training_file, targets)
    assert response.status_code == 200, response.text
    assert response.json()["lora"]["target_modules"] == targets
    assert http.post(f"/fine_tuning/jobs/{response.json()['id']}/cancel").status_code == 200


def _fake_safetensors(directory: Path, tensors: dict[str, list[int]], config: dict) -> None:
    directory.mkdir(parents=True)
    header = json.dumps({"__metadata__": {"format": "pt"}, **{
        name: {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}
        for name, shape in tensors.items()}}).encode()
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (directory / "config.json").write_text(json.dumps(config))


async def test_module_names_come_from_the_safetensors_header(tmp_path: Path) -> None:
    from server.service.lora_targets import check_lora_targets
    from tuneforge.domain import LoraConfig
    from tuneforge.errors import ApiError
    from tuneforge.settings import BaseModelEntry, Settings

    gpt2 = tmp_path / "gpt2ish"
    _fake_safetensors(gpt2, {
        "transformer.h.0.attn.c_attn.weight": [8, 24], "transformer.h.0.attn.c_attn.bias": [24],
        "transformer.h.0.ln_1.weight": [8], "transformer.wte.weight": [100, 8],
    }, {"model_type": "gpt2"})
    llama = tmp_path / "llama-no-weights"
    llama.mkdir()
    (llama / "config.json").write_text(json.dumps({"model_type": "llama"}))
    odd = tmp_path / "odd-no-weights"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps({"model_type": "something-new"}))
    settings = Settings(data_dir=tmp_path / "data", model_cache_dir=tmp_path / "cache",
                        base_models=[BaseModelEntry(name="g", path=str(gpt2)),
                                     BaseModelEntry(name="l", path=str(llama)),
                                     BaseModelEntry(name="o", path=str(odd)),
                                     BaseModelEntry(name="s3", path="s3://bucket/models/x"),
                                     BaseModelEntry(name="SmolLM2-135M-Instruct")])

    async def refused(model: str, targets: list[str]) -> bool:
        try:
            await check_lora_targets(settings, model, LoraConfig(target_modules=targets))
        except ApiError as exc:
            assert exc.param == "lora.target_modules"
            return True
        return False

    assert not await refused("g", ["c_attn", "attn.c_attn", "wte", "lm_head"])
    assert await refused("g", ["q_proj"])
    assert await refused("g", ["ln_1"])  # a norm: PEFT's LoRA cannot wrap it
    # No weights, known family: the LLaMA names, any layer number.
    assert not await refused("l", ["q_proj", "layers.17.mlp.up_proj", "gate_proj"])
    assert await refused("l", ["c_attn"])
    # The embedded model before the worker has converted it (empty cache): a LLaMA model.
    assert not await refused("SmolLM2-135M-Instruct", ["q_proj", "mlp.down_proj", "lm_head"])
    assert await refused("SmolLM2-135M-Instruct", ["query_key_value"])
    # Unknown architecture or weights not here yet: only the shape is checked.
    assert not await refused("o", ["anything"])
    assert not await refused("s3", ["anything"])
    assert await refused("s3", [])


# ---- 405 ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/fine_tuning/jobs", {"GET", "POST"}),
    ("PUT", "/files", {"GET", "POST"}),
    ("POST", "/files/file-abc", {"GET", "DELETE"}),
])
def test_405_names_the_allowed_methods(http: httpx.Client, method: str, path: str,
                                       allowed: set[str]) -> None:
    response = http.request(method, path)
    error = _error(response, 405)
    assert error["type"] == "invalid_request_error"
    methods = {m.strip() for m in response.headers["allow"].split(",")}
    assert allowed <= methods and method not in methods


def test_recursion_error_anywhere_in_a_request_is_a_400() -> None:
    from server.api.app import _recursion_error

    response = _recursion_error(None, RecursionError("maximum recursion depth exceeded"))  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.content["error"]["code"] == "json_too_deep"

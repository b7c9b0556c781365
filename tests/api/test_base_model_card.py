"""What a base model supports (`tuneforge/model_card.py`) on `GET /v1/models/{id}` and the
list: read from a local directory, from only the small objects of an `s3://` prefix, and
"what is known" (never a 500) for a model whose files cannot be read. REST through the openai
SDK, gRPC and REST through the TuneForge SDK, the CLI's `models get`.

The API here is a process of its own whose settings register these base models (the session's
API registers only the embedded default)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from minio import Minio
from tuneforge_client import TuneForge

from tests.conftest import MODEL_CACHE, REPO, ApiServer
from tuneforge.model_card import model_card, read_s3
from tuneforge.processes import free_port, spawn, wait_until
from tuneforge.settings import (
    BaseModelEntry,
    S3Settings,
    ServingSettings,
    Settings,
    VllmServerSettings,
)

EMBEDDED = "SmolLM2-135M-Instruct"
TOOLS_TEMPLATE = ("{% for m in messages %}{{ m.role }}: {{ m.content }}{% if m.tool_calls %}"
                  "{{ m.tool_calls | tojson }}{% endif %}<|eot_id|>{% endfor %}"
                  "{% if tools %}{{ tools | tojson }}{% endif %}")
PLAIN_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                  "{% endfor %}")


def llama_like(directory: Path) -> Path:
    """The small files of a Llama 3.1-shaped model (no weights: the card never reads them)."""
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {
        "config.json": {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                        "max_position_embeddings": 131072},
        "generation_config.json": {"bos_token_id": 128000,
                                   "eos_token_id": [128001, 128008, 128009]},
        "tokenizer_config.json": {
            "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
            "added_tokens_decoder": {
                str(i): {"content": c, "special": True} for i, c in (
                    (128000, "<|begin_of_text|>"), (128001, "<|end_of_text|>"),
                    (128008, "<|eom_id|>"), (128009, "<|eot_id|>"))},
            "chat_template": TOOLS_TEMPLATE},
    }
    for name, value in files.items():
        (directory / name).write_text(json.dumps(value))
    return directory


QWEN_FILES: dict[str, str] = {
    "config.json": json.dumps({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
                               "max_position_embeddings": 32768}),
    "generation_config.json": json.dumps({"eos_token_id": [151645, 151643]}),
    "tokenizer_config.json": json.dumps({
        "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "added_tokens_decoder": {"151643": {"content": "<|endoftext|>"},
                                 "151645": {"content": "<|im_end|>"}}}),
    "chat_template.jinja": PLAIN_TEMPLATE,
}


def upload(s3: S3Settings, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    client = Minio(s3.endpoint, access_key=s3.access_key,
                   secret_key=s3.secret_key.get_secret_value(), secure=False)
    if not client.bucket_exists(bucket):
        client.make_bucket(bucket)
    for name, data in files.items():
        client.put_object(bucket, f"{prefix}/{name}", io.BytesIO(data), len(data))


# ---- an API process with base models of its own (also used by tests/serving) -------------


def own_settings(root: Path, redis_url: str, s3: S3Settings, **updates: Any) -> Settings:
    """Settings for an API process of a test module's own: SQLite in `root`, the session's
    Redis and S3, free ports, the shared model cache."""
    from server.db.migrate import upgrade

    root.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite+aiosqlite:///{root / 'state.db'}"
    upgrade(database_url)
    values: dict[str, Any] = {
        "data_dir": root / "data", "database_url": database_url, "redis_url": redis_url,
        "s3": s3, "port": free_port(), "grpc_port": free_port(),
        "queue_name": f"tf-test-{uuid.uuid4().hex[:6]}", "model_cache_dir": MODEL_CACHE}
    return Settings(**{**values, **updates})


def start_api(settings: Settings, *, ready: float = 60, stop_timeout: float = 10) -> ApiServer:
    process = spawn("api", [sys.executable, "-m", "stack.cli", "server"],
                    settings.data_dir / "api.log", env=settings.to_env(), cwd=REPO,
                    stop_timeout=stop_timeout)
    base = f"http://127.0.0.1:{settings.port}"
    try:
        import httpx

        wait_until(lambda: httpx.get(f"{base}/v1/models").status_code == 401, ready,
                   "API server", process)
    except BaseException:
        process.stop()
        raise
    return ApiServer(process=process, base_url=f"{base}/v1")


def api_key(settings: Settings) -> str:
    """A new tenant's key, straight into the API's database."""
    from server.auth import create_key
    from server.db.session import create_engine, create_sessionmaker

    async def make() -> str:
        engine = create_engine(settings.effective_database_url)
        try:
            async with create_sessionmaker(engine)() as session:
                return (await create_key(session, f"cards-{uuid.uuid4().hex[:6]}"))[1]
        finally:
            await engine.dispose()

    return asyncio.run(make())


# ---- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def card_settings(tmp_root: Path, redis_url: str, s3: S3Settings) -> Settings:
    root = tmp_root / f"cards-{uuid.uuid4().hex[:6]}"
    bucket = f"cards-{uuid.uuid4().hex[:6]}"
    upload(s3, bucket, "qwen/tiny", {n: t.encode() for n, t in QWEN_FILES.items()})
    # Weights the card must never read: garbage that would fail any parser.
    upload(s3, bucket, "qwen/tiny", {"model.safetensors": b"\xff" * 1024})
    # A tokenizer_config.json that names no token ids: tokenizer.json names the stop ids.
    bare = {**QWEN_FILES, "tokenizer_config.json": json.dumps({"eos_token": "<|im_end|>"}),
            "tokenizer.json": json.dumps({"added_tokens": [
                {"id": 151643, "content": "<|endoftext|>"},
                {"id": 151645, "content": "<|im_end|>"}], "model": {"vocab": {"a": 0}}})}
    upload(s3, bucket, "qwen/bare", {n: t.encode() for n, t in bare.items()})
    return own_settings(root, redis_url, s3, base_models=[
        BaseModelEntry(name=EMBEDDED),
        BaseModelEntry(name="llama-local", path=str(llama_like(root / "llama"))),
        BaseModelEntry(name="qwen-s3", path=f"s3://{bucket}/qwen/tiny"),
        BaseModelEntry(name="qwen-bare-s3", path=f"s3://{bucket}/qwen/bare"),
        BaseModelEntry(name="gone-local", path=str(root / "missing")),
        BaseModelEntry(name="empty-s3", path=f"s3://{bucket}/nothing/here"),
    ], serving=ServingSettings(servers=[VllmServerSettings(
        base_model="llama-local", url="http://127.0.0.1:9", max_model_len=4096)]))


@pytest.fixture(scope="module")
def card_api(card_settings: Settings) -> Iterator[tuple[ApiServer, str]]:
    server = start_api(card_settings)
    try:
        yield server, api_key(card_settings)
    finally:
        server.process.stop()


# ---- the card, read from files -----------------------------------------------------------


def test_card_of_a_local_directory_and_the_context_rule(card_settings: Settings) -> None:
    card = model_card(card_settings, "llama-local")
    assert card.complete
    assert (card.architecture, card.family) == ("LlamaForCausalLM", "llama")
    # The inference server for it serves 4096 tokens: that is what a request can use.
    assert (card.max_position_embeddings, card.context_length) == (131072, 4096)
    assert card.chat_template and card.supports_tools
    assert card.methods == ("supervised", "dpo")
    assert card.stop_tokens == ("<|end_of_text|>", "<|eom_id|>", "<|eot_id|>")


def test_card_reads_only_the_small_objects_of_an_s3_model(card_settings: Settings) -> None:
    card = model_card(card_settings, "qwen-s3")
    assert card.complete and card.architecture == "Qwen2ForCausalLM"
    # No inference server for it: the model's own limit.
    assert card.context_length == card.max_position_embeddings == 32768
    assert card.chat_template and card.supports_tools is False
    assert card.stop_tokens == ("<|im_end|>", "<|endoftext|>")
    assert not (card_settings.effective_model_cache_dir / "qwen-s3").exists()
    assert model_card(card_settings, "qwen-bare-s3").stop_tokens == \
        ("<|im_end|>", "<|endoftext|>")


def test_unreachable_s3_leaves_the_card_incomplete(card_settings: Settings) -> None:
    from tuneforge.layout import S3Url

    down = card_settings.s3.model_copy(update={"endpoint": f"127.0.0.1:{free_port()}"})
    files = read_s3(S3Url.parse("s3://b/p"), down, timeout=1)
    assert files.texts == {} and not files.complete


def test_gemma3_text_config_and_a_model_without_chat_template(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "max_position_embeddings": 131072}}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>"}))
    settings = Settings(data_dir=tmp_path / "d", model_cache_dir=tmp_path / "c",
                        base_models=[BaseModelEntry(name="g", path=str(tmp_path))])
    card = model_card(settings, "g")
    assert card.complete and card.family == "gemma3"
    assert card.context_length == 131072
    assert card.chat_template is False and card.methods == ()
    assert card.fields()["methods"] is None  # left out of the model object
    assert card.supports_tools is False and card.stop_tokens == ("<eos>",)


@pytest.mark.parametrize(("entry", "why"), [
    ({"name": "a:b", "path": "/x"}, "without ':'"),
    ({"name": "org/model", "path": "/x"}, "without ':', '/'"),
    ({"name": "m", "path": "s3://bucket-only"}, "is not s3://bucket/prefix"),
])
def test_registrations_that_cannot_work_are_refused_at_start(entry: dict[str, str],
                                                             why: str) -> None:
    with pytest.raises(ValueError, match=why):
        Settings(base_models=[BaseModelEntry(**entry)])


def test_a_started_server_needs_a_model_it_can_prepare(tmp_path: Path) -> None:
    from tuneforge.base_models import BaseModelError, check_startable

    with pytest.raises(ValueError, match="more than once"):
        Settings(base_models=[BaseModelEntry(name="m", path="/a"),
                              BaseModelEntry(name="m", path="/b")])
    settings = Settings(base_models=[BaseModelEntry(name="nopath"),
                                     BaseModelEntry(name="gone", path=str(tmp_path / "x"))])
    for name, why in (("nopath", "has no path"), ("gone", "is not a directory"),
                      ("unregistered", "does not register")):
        with pytest.raises(BaseModelError, match=why):
            check_startable(settings, name)
    # The API's serving plane checks before it starts a server (an attached one is its
    # operator's business).
    import httpx

    from serving.registry import Registry
    from serving.supervisor import Supervisor

    started = settings.model_copy(update={"serving": ServingSettings(servers=[
        VllmServerSettings(base_model="nopath", url="http://127.0.0.1:9"),
        VllmServerSettings(base_model="gone")])})
    with pytest.raises(BaseModelError, match="'gone'"):
        Supervisor(started, Registry(), httpx.AsyncClient())


# ---- through the API ---------------------------------------------------------------------


def test_base_models_show_their_card_over_rest(card_api: tuple[ApiServer, str],
                                               card_settings: Settings) -> None:
    server, key = card_api
    with openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0) as client:
        llama = client.models.retrieve("llama-local")  # the SDK parses the extensions
        assert llama.owned_by == "tuneforge"
        extra = llama.model_extra or {}
        assert extra["context_length"] == 4096 and extra["supports_tools"] is True
        assert extra["methods"] == ["supervised", "dpo"]
        assert extra["tunings"] == ["lora", "qlora", "full", "spectrum"]
        assert extra["stop_tokens"] == ["<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"]
        listed = {m.id: m.model_extra or {} for m in client.models.list()}
        assert listed["llama-local"] == extra
        assert listed["qwen-s3"]["architecture"] == "Qwen2ForCausalLM"
        assert listed[EMBEDDED].get("family") in ("llama", None)  # None: not converted yet
        # Files that cannot be read: what is known, never a 500, no server path.
        gone = client.models.retrieve("gone-local").model_dump()
        assert gone["methods"] == ["supervised", "dpo"] and "architecture" not in gone
        assert "missing" not in json.dumps(gone)
        empty = client.models.retrieve("empty-s3").model_dump()
        assert empty["chat_template"] is False and "methods" not in empty
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("not-registered")
        # A complete card is read once per process.
        entry = card_settings.base_model("llama-local")
        assert entry is not None
        config = Path(entry.path) / "config.json"
        original = config.read_text()
        config.write_text(original.replace("LlamaForCausalLM", "ChangedForCausalLM"))
        try:
            assert client.models.retrieve("llama-local").model_extra == extra
        finally:
            config.write_text(original)


def test_grpc_rest_and_cli_show_the_same_card(card_api: tuple[ApiServer, str],
                                              card_settings: Settings) -> None:
    server, key = card_api
    target = f"127.0.0.1:{card_settings.grpc_port}"
    with TuneForge(base_url=server.base_url, api_key=key, grpc_target=target,
                   transport="grpc") as grpc_client, \
            TuneForge(base_url=server.base_url, api_key=key, transport="rest") as rest_client:
        for name in ("llama-local", "qwen-s3", "empty-s3"):
            over_grpc = grpc_client.models.get(name)
            assert over_grpc.to_dict() == rest_client.models.get(name).to_dict()
        assert grpc_client.models.get("qwen-s3").stop_tokens == ["<|im_end|>", "<|endoftext|>"]
        assert grpc_client.models.list().to_dict() == rest_client.models.list().to_dict()
    env = {"TUNEFORGE_BASE_URL": server.base_url, "TUNEFORGE_API_KEY": key,
           "TUNEFORGE_GRPC_TARGET": target, "COLUMNS": "160",
           "TUNEFORGE_CLIENT_CONFIG": str(card_settings.data_dir / "no-client.toml")}
    shown = subprocess.run([sys.executable, "-m", "tuneforge_client.cli", "models", "get",
                            "llama-local"], env={**_plain_env(), **env}, capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "context_length" in shown.stdout and "4096" in shown.stdout
    assert "<|end_of_text|>, <|eom_id|>, <|eot_id|>" in shown.stdout


def _plain_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}

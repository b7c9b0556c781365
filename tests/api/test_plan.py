"""`POST /v1/fine_tuning/jobs/plan` over REST (the openai SDK's `client.post`): the plan of a
job, with nothing created, checked as job creation checks it."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import func, select

from tests.api.data import chat_jsonl
from tests.conftest import MODEL_CACHE

MODEL = "SmolLM2-135M-Instruct"
BUNDLED = Path(__file__).resolve().parents[1] / "trainer" / "data"


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """The converted base model in the cache the API server reads (the worker fills it)."""
    from tuneforge.base_models import EMBEDDED_MODEL_NAME, prepare_base_model

    return prepare_base_model(EMBEDDED_MODEL_NAME, "", MODEL_CACHE)


def _upload(client: openai.OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune").id


def _plan(client: openai.OpenAI, **body: object) -> dict:
    return client.post("/fine_tuning/jobs/plan", body={"model": MODEL, **body},
                       cast_to=httpx.Response).json()


def _sft_data() -> bytes:
    """12 short conversations plus the bundled chat examples (system prompt, weights, content
    parts, tools): 16 examples."""
    return chat_jsonl(12) + (BUNDLED / "openai_chat.jsonl").read_bytes()


def _transformers_counts(model_dir: Path, data: bytes, method: str) -> list[int]:
    """Tokens per example as the worker counts them, with transformers: the whole conversation
    through `apply_chat_template(tokenize=True)` (a DPO pair: its longer sequence)."""
    from transformers import AutoTokenizer

    from trainer.encode import ChatFormatter
    from tuneforge.data_formats import FormatCheck, SftExample
    from tuneforge.domain import MethodType

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    formatter = ChatFormatter.for_tokenizer(tokenizer)
    check = FormatCheck(MethodType(method))
    counts = []
    for line, raw in enumerate(data.decode().splitlines(), 1):
        example = check.add(line, json.loads(raw))
        if isinstance(example, SftExample):
            sequences = [(example.messages, example.tools)]
        else:
            sequences = [([*example.prompt, answer], example.tools)
                         for answer in (example.chosen, example.rejected)]
        lengths = []
        for messages, tools in sequences:
            rendered, tools = formatter.template_messages(messages, tools)
            lengths.append(len(tokenizer.apply_chat_template(
                rendered, tools=tools, tokenize=True, return_dict=True)["input_ids"]))
        counts.append(max(lengths))
    return counts


async def _stored(services) -> tuple[int, int, int]:  # type: ignore[no-untyped-def]
    from server.db.models import Job, JobEvent

    async with services.ctx.sessions() as session:
        jobs = (await session.execute(select(func.count()).select_from(Job))).scalar_one()
        events = (await session.execute(select(func.count()).select_from(JobEvent))).scalar_one()
    objects = len(await services.ctx.store.list_keys("jobs/"))
    return jobs, events, objects


async def test_plan_of_a_good_file(client: openai.OpenAI, services, model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    data = _sft_data()
    training_file = _upload(client, data)
    before = await _stored(services)
    plan = _plan(client, training_file=training_file)
    assert await _stored(services) == before  # no job, no event, no object
    assert plan["object"] == "fine_tuning.job.plan"
    assert plan["model"] == plan["base_model"] == MODEL and plan["method"] == "supervised"
    assert plan["valid"] is True
    train = plan["training_data"]
    assert train["file_id"] == training_file and train["format"] == "openai_chat"
    assert train["n_examples"] == 16 and train["errors"] == [] and not train["errors_truncated"]
    counts = _transformers_counts(model_dir, data, "supervised")
    assert train["tokens"] == {
        "total": sum(counts), "min": min(counts), "median": statistics.median(counts),
        "max": max(counts), "max_seq_length": 1024, "n_over_max_seq_length": 0,
        "over_max_seq_length_lines": []}
    assert plan["model_shape"]["parameters"] > 100_000_000

    devices = {d["name"]: d for d in plan["devices"]}
    assert list(devices) == ["cpu", "gpu-16gib", "gpu-24gib", "gpu-40gib", "gpu-80gib"]
    cpu = devices["cpu"]
    # 16 examples: batch 1 (2^floor(log2(16/32)) clamped to 1), ceil(100/16) = 7 epochs.
    assert cpu["hyperparameters"] == {"batch_size": 1, "learning_rate_multiplier": 1.0,
                                      "n_epochs": 7, "learning_rate": 2e-4}
    assert cpu["steps"] == 16 * 7 and cpu["training_examples"] == 16
    assert (cpu["tuning"], cpu["quantization"], cpu["fits"]) == ("lora", "none", True)
    training = cpu["training"]
    assert training["lr_scheduler"] == "cosine" and training["warmup_ratio"] == 0.05
    assert training["weight_decay"] == 0.01 and training["max_seq_length"] == 1024
    assert training["gradient_checkpointing"] is False and training["optimizer"] == "adamw"
    assert cpu["trained_tokens"] == sum(counts) * 7
    # The CPU throughput is calibrated to ~137 tokens/s for this model's LoRA (STACK.md).
    assert cpu["estimated_seconds"] == pytest.approx(sum(counts) * 7 / 137, rel=0.1)
    assert 0 < cpu["estimated_peak_memory_bytes"] < 8 * 1024**3
    for device in list(devices.values())[1:]:
        assert device["kind"] == "gpu" and device["fits"] is True
        assert 0 < device["estimated_seconds"] < cpu["estimated_seconds"]
    codes = [w["code"] for w in plan["warnings"]]
    assert codes == ["few_examples"], plan["warnings"]

    # "auto": the decision tree per device (a 135M model fully fine-tunes on any GPU); a
    # validation split, early stopping and a short max_seq_length resolve as the worker would.
    auto = _plan(client, training_file=training_file, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1,
                                                                 "batch_size": 4}}},
        training={"tuning": "auto", "validation_split": 0.25, "max_seq_length": 48,
                  "early_stopping": {"patience": 2}})
    devices = {d["name"]: d for d in auto["devices"]}
    assert devices["cpu"]["tuning"] == "lora"
    assert all(d["tuning"] == "full" for name, d in devices.items() if name != "cpu")
    assert devices["gpu-80gib"]["hyperparameters"]["learning_rate"] < 2e-4
    assert devices["gpu-80gib"]["reason"].startswith("auto")
    assert devices["cpu"]["training_examples"] == 12 and devices["cpu"]["validation_examples"] == 4
    assert devices["cpu"]["steps"] == 3
    assert devices["cpu"]["training"]["early_stopping"] == {"patience": 2, "min_delta": 0.0}
    assert devices["cpu"]["training"]["validation_split"] == 0.25
    over = [i for i, n in enumerate(counts, 1) if n > 48]
    assert auto["training_data"]["tokens"]["over_max_seq_length_lines"] == over
    codes = [w["code"] for w in auto["warnings"]]
    assert codes == ["few_examples", "few_steps", "truncated_examples"], auto["warnings"]
    assert await _stored(services) == before


@pytest.mark.parametrize(("name", "method"), [
    ("alpaca", "supervised"), ("prompt_completion", "supervised"),
    ("openai_preference", "dpo"), ("prompt_chosen_rejected", "dpo")])
def test_plan_counts_every_format_as_transformers(client: openai.OpenAI, model_dir: Path,
                                                  name: str, method: str) -> None:
    """The bundled files of the other formats (a DPO pair counts its longer sequence)."""
    data = (BUNDLED / f"{name}.jsonl").read_bytes() * 5
    plan = _plan(client, training_file=_upload(client, data),
                 method={"type": method, method: {"hyperparameters": {"n_epochs": 2}}})
    assert plan["valid"] is True and plan["training_data"]["format"] == name
    counts = _transformers_counts(model_dir, data, method)
    tokens = plan["training_data"]["tokens"]
    assert (tokens["total"], tokens["min"], tokens["max"]) == (sum(counts), min(counts),
                                                               max(counts))
    assert plan["devices"][0]["hyperparameters"]["n_epochs"] == 2
    if method == "dpo":
        assert plan["devices"][0]["hyperparameters"]["beta"] == 0.1


def test_plan_lists_every_bad_line(client: openai.OpenAI, model_dir: Path) -> None:
    from server.service.validation import check_file
    from tuneforge.domain import MethodType

    good = chat_jsonl(12).decode().splitlines()
    # Line rules (JSON, objects) are the upload's: these break the shape rules.
    lines = [good[0], '{"foo": 1}', good[1], '{"messages": []}', good[2],
             '{"messages": [{"role": "user", "content": "hi"}]}', "", good[3],
             '{"prompt": "a", "completion": "b"}', '{"messages": [{"role": "robot"}]}',
             *good[4:]]
    data = ("\n".join(lines) + "\n").encode()
    plan = _plan(client, training_file=_upload(client, data))
    assert plan["valid"] is False
    train = plan["training_data"]
    assert [e["line"] for e in train["errors"]] == [2, 4, 6, 9, 10]
    assert {e["code"] for e in train["errors"]} == {"invalid_training_file"}
    assert all(e["message"].startswith(f"line {e['line']}: ") for e in train["errors"])
    # The first one is exactly what the job's validation says.
    path = Path(__file__).parent / ".plan-bad.jsonl"
    try:
        path.write_bytes(data)
        problem = check_file(path, MethodType.SUPERVISED, min_examples=10,
                             code="invalid_training_file")
    finally:
        path.unlink()
    assert problem is not None and problem.message == train["errors"][0]["message"]
    assert "unrecognized example format" in train["errors"][0]["message"]
    assert "messages is empty" in train["errors"][1]["message"]
    assert "no assistant message" in train["errors"][2]["message"]
    assert "prompt_completion format but the file is in openai_chat" in \
        train["errors"][3]["message"]
    assert train["n_examples"] == 12 and train["n_lines"] == len(lines)
    assert train["tokens"]["total"] > 0
    assert plan["warnings"][0]["code"] == "invalid_data"

    # Too few examples is a file-level error (no line).
    few = _plan(client, training_file=_upload(client, chat_jsonl(3)))
    assert few["training_data"]["errors"] == [{
        "line": None, "code": "invalid_n_examples",
        "message": "The file has 3 example(s), but must have at least 10 examples"}]


@pytest.mark.parametrize(("body", "param"), [
    ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 0}}}},
     "method.supervised.hyperparameters.n_epochs"),
    ({"training": {"validation_split": 0.9}}, "training.validation_split"),
    ({"training": {"tuning": "sideways"}}, "training.tuning"),
    ({"model": "no-such-model"}, "model"),
    ({"lora": {"target_modules": ["no_such_proj"]}}, "lora.target_modules"),
])
def test_bad_parameters_are_the_same_400_as_create(client: openai.OpenAI, body: dict,
                                                   param: str) -> None:
    training_file = _upload(client, chat_jsonl())
    answers = []
    for path in ("/fine_tuning/jobs/plan", "/fine_tuning/jobs"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.post(path, body={"model": MODEL, "training_file": training_file, **body},
                        cast_to=httpx.Response)
        answers.append(caught.value.body)
    assert answers[0] == answers[1]
    assert answers[0]["param"] == param, answers[0]


def test_another_tenants_file_is_refused_as_create_refuses_it(
        client: openai.OpenAI, client_b: openai.OpenAI) -> None:
    theirs = _upload(client_b, chat_jsonl())
    answers = []
    for path in ("/fine_tuning/jobs/plan", "/fine_tuning/jobs"):
        with pytest.raises(openai.BadRequestError) as caught:
            client.post(path, body={"model": MODEL, "training_file": theirs},
                        cast_to=httpx.Response)
        answers.append(caught.value.body)
    assert answers[0] == answers[1] and answers[0]["param"] == "training_file"


def test_the_plan_is_in_the_openapi_document(api_server) -> None:  # type: ignore[no-untyped-def]
    document = httpx.get(f"{api_server.base_url.removesuffix('/v1')}/schema/openapi.json").json()
    operation = document["paths"]["/v1/fine_tuning/jobs/plan"]["post"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/JobPlanObject")
    plan = document["components"]["schemas"]["JobPlanObject"]
    assert {"training_data", "devices", "warnings", "valid"} <= set(plan["properties"])
    assert "400" in operation["responses"]


def test_plan_decides_per_device_for_a_large_model() -> None:
    """The decision tree with a 7B model's shape: auto picks QLoRA on 12 GiB, LoRA on 40 GiB
    and full fine-tuning on 141 GiB; an asked full fine-tune does not fit below that."""
    from server.service.plan_devices import Device, JobData, plan_device
    from tuneforge.domain import DpoHyperparameters, LoraConfig, MethodType, TrainingConfig
    from tuneforge.memory import GIB, ModelShape

    shape = ModelShape(n_params=7_000_000_000, hidden_size=4096, n_layers=32,
                       vocab_size=32000, intermediate_size=11008)

    def job(tuning: str) -> JobData:
        return JobData(method=MethodType.SUPERVISED, hyperparameters=DpoHyperparameters(),
                       lora=LoraConfig(), training=TrainingConfig(tuning=tuning,
                                                                  max_seq_length=512),
                       shape=shape, n_examples=2000, n_validation_file_examples=None,
                       train_tokens=2000 * 300, validation_file_tokens=None)

    gpus = [Device(f"gpu-{g}gib", "gpu", g * GIB, 100e12) for g in (12, 40, 141)]
    auto = [plan_device(job("auto"), d) for d in gpus]
    assert [(d.tuning, d.quantization, d.fits) for d in auto] == [
        ("qlora", "4bit", True), ("lora", "none", True), ("full", "none", True)]
    lora = plan_device(job("lora"), gpus[0])  # a bf16 base does not fit: 4-bit, as the worker
    assert (lora.tuning, lora.quantization) == ("lora", "4bit")
    full = [plan_device(job("full"), d) for d in gpus]
    assert [d.fits for d in full] == [False, False, True]
    assert "does not fit" in full[0].reason
    assert full[0].estimated_peak_memory_bytes > 100 * GIB
    # 6·N per token for full fine-tuning against 4·N for LoRA.
    assert full[2].estimated_flops > plan_device(job("lora"), gpus[2]).estimated_flops

"""One sequence of operations over REST (raw JSON) and over gRPC (the SDK): equal objects.

Each gRPC object is turned back into OpenAI's JSON by the SDK (`to_dict()`) and compared with
what the REST API answers for the same object, field for field.
"""

from __future__ import annotations

from typing import Any

import httpx
from tuneforge_client import TuneForge

from tests.api.data import chat_jsonl
from tests.conftest import until_validated
from tests.grpc.conftest import MODEL, arest_upload
from tuneforge.domain import EventType, JobStatus, fine_tuned_model_name

VOLATILE = ("id", "created_at", "training_file", "validation_file", "seed", "first_id", "last_id")

EVERY_PARAMETER: dict[str, Any] = {
    "model": MODEL,
    "suffix": "parity_v1.0",
    "metadata": {"team": "search", "run": "7"},
    "integrations": [{"type": "wandb", "wandb": {"project": "tf", "entity": "me",
                                                  "tags": ["a", "b"]}},
                     {"type": "mlflow", "mlflow": {"experiment": "tf", "run_name": "r",
                                                   "tracking_uri": "http://mlflow:5000",
                                                   "tags": {"team": "search"}}}],
    "method": {"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 3, "batch_size": "auto", "learning_rate_multiplier": 0.5}}},
    "lora": {"rank": 8, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"],
             "quantization": "4bit"},
}


def same_but_ids(a: dict[str, Any], b: dict[str, Any], *extra: str) -> None:
    strip = set(VOLATILE) | set(extra)
    assert {k: v for k, v in a.items() if k not in strip} == \
        {k: v for k, v in b.items() if k not in strip}


class Rest:
    """The raw REST API: JSON in, JSON out."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __call__(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.client.request(method, path, **kwargs)
        return response.json() if response.is_success else response.status_code


async def test_same_sequence_same_objects(arest: httpx.AsyncClient, tf: TuneForge,
                                          tf_rest: TuneForge, services) -> None:  # type: ignore[no-untyped-def]
    rest = Rest(arest)
    content = chat_jsonl()

    # Upload over each transport: the same file object but for its id and time.
    file_rest = (await arest_upload(arest, content)).json()
    file_grpc = tf.files.upload(content, filename="train.jsonl").to_dict()
    same_but_ids(file_rest, file_grpc)
    for file_id in (file_rest["id"], file_grpc["id"]):
        assert tf.files.get(file_id).to_dict() == await rest("GET", f"/files/{file_id}")
        downloaded = (await arest.get(f"/files/{file_id}/content")).content
        assert tf.files.content(file_id) == downloaded == content
        assert tf.files.get(file_id) == tf_rest.files.get(file_id)
    for query in ({"purpose": "fine-tune", "order": "asc", "after": file_rest["id"]},
                  {"limit": 1}, {"purpose": "user_data"}):
        assert tf.files.list(**query).to_dict() == await rest("GET", "/files", params=query)

    # Create a job with every parameter over each transport.
    body_rest = {**EVERY_PARAMETER, "training_file": file_rest["id"],
                 "validation_file": file_rest["id"], "seed": 7}
    body_grpc = {**EVERY_PARAMETER, "training_file": file_grpc["id"],
                 "validation_file": file_grpc["id"], "seed": 7}
    job_rest = await rest("POST", "/fine_tuning/jobs", json=body_rest)
    job_grpc = tf.jobs.create(**body_grpc).to_dict()
    assert job_rest["status"] == "validating_files"
    same_but_ids(job_rest, job_grpc)
    assert job_grpc["training_file"] == file_grpc["id"] and job_grpc["seed"] == 7
    # DPO and the legacy top-level hyperparameters too.
    for extra in ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}}},
                  {"hyperparameters": {"n_epochs": 5}}):
        over_rest = await rest("POST", "/fine_tuning/jobs",
                               json={"model": MODEL, "training_file": file_rest["id"], **extra})
        over_grpc = tf.jobs.create(model=MODEL, training_file=file_grpc["id"], **extra)
        same_but_ids(over_rest, over_grpc.to_dict())

    for job_id in (job_rest["id"], job_grpc["id"]):
        assert await until_validated(services, job_id) == "queued"
        assert tf.jobs.get(job_id).to_dict() == await rest("GET", f"/fine_tuning/jobs/{job_id}")
        assert tf.jobs.get(job_id) == tf_rest.jobs.get(job_id)

    # Events (with metrics data) and checkpoints, recorded as a worker would.
    job_id = job_grpc["id"]
    path = f"/fine_tuning/jobs/{job_id}"
    await services.protocol.advance(job_id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                    message="Fine-tuning job started")
    data = {"step": 2, "total_steps": 10, "train_loss": 1.25, "valid_loss": None, "note": "x"}
    await services.protocol.add_event(job_id, "Step 2/10: training loss=1.25",
                                      type=EventType.METRICS, data=data)
    await services.protocol.add_checkpoint(job_id, step=2, model_name="ckpt-model-2",
                                           metrics={"step": 2, "train_loss": 1.25})
    for query in ({}, {"limit": 2}):
        assert tf.jobs.events(job_id, **query).to_dict() == \
            await rest("GET", f"{path}/events", params=query)
        assert tf.jobs.checkpoints(job_id, **query).to_dict() == \
            await rest("GET", f"{path}/checkpoints", params=query)
    metrics = tf.jobs.events(job_id, limit=1).data[0]
    assert metrics.type == "metrics" and metrics.data == data
    assert tf.jobs.list(limit=2).to_dict() == \
        await rest("GET", "/fine_tuning/jobs", params={"limit": 2})
    assert tf.jobs.list(metadata={"team": "search"}).to_dict() == \
        await rest("GET", "/fine_tuning/jobs", params={"metadata[team]": "search"})

    # Control: pause over gRPC, resume over REST, cancel over each; the views agree.
    paused = tf.jobs.pause(job_id).to_dict()
    assert paused == await rest("GET", path) and paused["status"] == "paused"
    resumed = await rest("POST", f"{path}/resume")
    assert resumed == tf.jobs.get(job_id).to_dict() and resumed["status"] == "queued"
    cancelled = tf.jobs.cancel(job_id).to_dict()
    assert cancelled == await rest("GET", path) and cancelled["status"] == "cancelled"
    cancelled_rest = await rest("POST", f"/fine_tuning/jobs/{job_rest['id']}/cancel")
    same_but_ids(cancelled_rest, tf.jobs.get(job_rest["id"]).to_dict(), "finished_at")

    # Models: the same list, and a fine-tuned model deleted over gRPC is gone over REST.
    job = tf.jobs.create(model=MODEL, training_file=file_grpc["id"], suffix="parity")
    assert await until_validated(services, job.id) == "queued"
    await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING)
    name = fine_tuned_model_name(MODEL, job.organization_id, "parity", job.id)
    await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                    trained_tokens=99)
    assert tf.jobs.get(job.id).to_dict() == await rest("GET", f"/fine_tuning/jobs/{job.id}")
    assert tf.models.list().to_dict() == await rest("GET", "/models")
    for model in (MODEL, name):
        assert tf.models.get(model).to_dict() == await rest("GET", f"/models/{model}")
    assert tf.models.delete(name).to_dict() == {"id": name, "object": "model", "deleted": True}
    assert await rest("GET", f"/models/{name}") == 404

    # Delete over gRPC: gone over REST; and the other way round.
    doomed_grpc = tf.files.upload(b"notes", filename="notes.txt", purpose="user_data").id
    doomed_rest = (await arest_upload(arest, b"notes", "notes.txt", "user_data")).json()["id"]
    assert tf.files.delete(doomed_grpc).to_dict() == \
        {"id": doomed_grpc, "object": "file", "deleted": True}
    assert await rest("GET", f"/files/{doomed_grpc}") == 404
    assert await rest("DELETE", f"/files/{doomed_rest}") == \
        {"id": doomed_rest, "object": "file", "deleted": True}
    assert tf.files.list(purpose="user_data").to_dict() == \
        await rest("GET", "/files", params={"purpose": "user_data"})

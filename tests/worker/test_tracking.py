"""Experiment tracking through a real worker: a job's W&B (offline) and MLflow runs hold its
hyperparameters, every metrics event and the final result; a tracker that fails mid-run is one
warning event and the job still succeeds.

MLflow is a real `mlflow server` (SQLite backend) started here; W&B runs offline (the test
settings), and its run file is read with W&B's own protobuf records.
"""

from __future__ import annotations

import glob
import json
import struct
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import REPO
from tests.worker.conftest import MODEL, all_events, assert_no_internals, sft_file, wait_status
from tuneforge.domain import IntegrationType, MlflowIntegration
from tuneforge.processes import ManagedProcess, free_port, spawn, wait_until

pytestmark = pytest.mark.train


@pytest.fixture(autouse=True)
def _sqlite_only(request: pytest.FixtureRequest) -> None:
    if "postgresql" in request.node.callspec.id:
        pytest.skip("worker runs are database-independent; trained once, on SQLite")


# ---- a real MLflow tracking server ---------------------------------------------------------


@dataclass
class MlflowServer:
    process: ManagedProcess
    uri: str

    def ready(self) -> MlflowServer:
        """Started at once by the fixture, waited for here: its start (10-30 s on two cores)
        overlaps the worker's."""
        def answers() -> bool:
            try:
                return httpx.get(f"{self.uri}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, 180, "mlflow server", self.process)
        return self

    def client(self):  # type: ignore[no-untyped-def]
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="module")
def mlflow_server(settings) -> Iterator[MlflowServer]:  # type: ignore[no-untyped-def]
    if "postgresql" in str(settings.database_url):
        pytest.skip("trained once, on SQLite")
    root = settings.data_dir / f"mlflow-{free_port()}"
    root.mkdir()
    port = free_port()
    process = spawn("mlflow", [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ], root / "mlflow.log", env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cwd=REPO)
    yield MlflowServer(process, f"http://127.0.0.1:{port}")
    process.stop()


# ---- W&B's offline run file ------------------------------------------------------------------

_WANDB_BLOCK = 32 * 1024
_WANDB_HEADER = 7  # ":W&B", magic 0xBEE1, version
_RECORD_HEADER = 7  # CRC32C, length, chunk type (LevelDB's log format)


def wandb_records(path: Path) -> list[Any]:
    """The records of a `.wandb` run file (W&B's `Record` protobufs), in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B run file"
    records, chunks, position = [], b"", _WANDB_HEADER
    while position + _RECORD_HEADER <= len(data):
        left = _WANDB_BLOCK - position % _WANDB_BLOCK
        if left < _RECORD_HEADER:  # a block's zero padding
            position += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + _RECORD_HEADER])
        position += _RECORD_HEADER
        chunks += data[position:position + length]
        position += length
        if kind in (1, 4):  # FULL, or LAST of FIRST/MIDDLE/LAST
            record = wandb_internal_pb2.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


@dataclass
class WandbRun:
    run: Any  # the RunRecord: id, project, entity, display name, tags, config at start
    config: dict[str, Any]
    history: dict[int, dict[str, Any]]  # by step
    summary: dict[str, Any]
    exit_code: int | None


def read_wandb_run(path: Path) -> WandbRun:
    run, config, history, summary, exit_code = None, {}, {}, {}, None
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            config.update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            row = {("/".join(i.nested_key) or i.key): json.loads(i.value_json)
                   for i in record.history.item}
            history[int(row["_step"])] = row
        elif kind == "summary":
            summary.update({(u.key or "/".join(u.nested_key)): json.loads(u.value_json)
                            for u in record.summary.update})
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert run is not None, "no run record"
    return WandbRun(run, config, history, summary, exit_code)


# ---- the tests ---------------------------------------------------------------------------------


def test_a_tracker_that_fails_after_start_is_one_warning(mlflow_server: MlflowServer) -> None:
    """The fan-out on its own: an MLflow server that stops answering after the run started
    (its client pointed at a closed port) costs one warning; the other tracker goes on."""
    from mlflow import MlflowClient

    from trainer.tracking import TrackingFanOut
    from trainer.tracking.mlflow_tracker import MlflowTracker
    from tuneforge.settings import TrackingSettings

    tracking = TrackingSettings(mlflow_request_timeout_seconds=2, mlflow_request_retries=0)
    server = mlflow_server.ready()

    def tracker() -> MlflowTracker:
        return MlflowTracker(MlflowIntegration(experiment="fanout", tracking_uri=server.uri),
                             tracking, job_id="ftjob-fanout")

    dying, living = tracker(), tracker()
    started, warnings = [], []
    fan = TrackingFanOut([(0, IntegrationType.MLFLOW, dying),
                          (1, IntegrationType.MLFLOW, living)],
                         on_started=lambda run, message: started.append(run),
                         on_warning=warnings.append)
    fan.start({"n_epochs": 1}, {"model": MODEL})
    wait_until(lambda: len(started) == 2, 60, "both runs started")
    assert [r.index for r in started] == [0, 1]
    dying.client = MlflowClient(tracking_uri=f"http://127.0.0.1:{free_port()}")
    for step in (1, 2, 3):
        fan.log({"step": step, "total_steps": 3, "train_loss": 2.0 / step})
    fan.finish({"trained_tokens": 10}, "succeeded").result(timeout=60)

    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("MLflow tracking stopped: the log call failed")
    assert "127.0.0.1" not in warnings[0]
    client = server.client()
    history = client.get_metric_history(living.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0), (3, 2.0 / 3)]
    assert client.get_run(living.run_id).info.status == "FINISHED"
    assert client.get_run(living.run_id).data.tags["tuneforge.trained_tokens"] == "10"
    assert client.get_metric_history(dying.run_id, "train_loss") == []
    assert client.get_run(dying.run_id).info.status == "RUNNING"  # never heard of again


def test_a_resumed_job_continues_its_runs(mlflow_server: MlflowServer, settings) -> None:  # type: ignore[no-untyped-def]
    """Pause closes the run; the job's next run reopens it (the run ids the job shows) and
    logs on at the next steps."""
    from trainer.tracking import TrackingFanOut
    from tuneforge.domain import Integration, JobSpec, TrackingRun

    server = mlflow_server.ready()
    spec = JobSpec(job_id="ftjob-resumed", organization_id="org-test", model=MODEL,
                   method="supervised", training_file="file-x", hyperparameters={}, seed=1,
                   integrations=[Integration(type="mlflow", mlflow=MlflowIntegration(
                       experiment="resumed", tracking_uri=server.uri))])

    def run(spec: JobSpec, step: int, status: str) -> list[TrackingRun]:
        started: list[TrackingRun] = []
        fan = TrackingFanOut.for_job(spec, settings,
                                     on_started=lambda r, message: started.append(r),
                                     on_warning=pytest.fail)
        fan.start({"n_epochs": "auto"}, {"model": MODEL})
        fan.log({"step": step, "train_loss": 1.0 / step})
        fan.finish({"hyperparameters": {"n_epochs": 2}}, status).result(timeout=60)
        return started

    first = run(spec, 1, "paused")
    client = server.client()
    assert client.get_run(first[0].run_id).info.status == "KILLED"
    again = run(spec.model_copy(update={"tracking_runs": first}), 2, "succeeded")
    assert [r.run_id for r in again] == [first[0].run_id]
    finished = client.get_run(first[0].run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params["hyperparameters.n_epochs"] == "auto"
    assert finished.data.params["resolved_hyperparameters.n_epochs"] == "2"
    assert [m.step for m in client.get_metric_history(first[0].run_id, "train_loss")] == [1, 2]


def test_job_logs_to_wandb_and_mlflow(client: openai.OpenAI, mlflow_server: MlflowServer,
                                      worker, settings) -> None:  # type: ignore[no-untyped-def]
    training_file = sft_file(client, n=12)
    server = mlflow_server.ready()
    job = client.fine_tuning.jobs.create(
        model=MODEL, training_file=training_file, suffix="tracked", seed=3,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 5}}},
        integrations=[
            {"type": "wandb", "wandb": {"project": "tuneforge-test", "entity": "team",
                                        "name": "arith", "tags": ["ci", "tracking"]}},
            {"type": "mlflow", "mlflow": {"experiment": "tuneforge-test", "run_name": "arith",
                                          "tracking_uri": server.uri,
                                          "tags": {"team": "search"}}},
            # This run is deleted while the job trains: its tracker fails mid-run.
            {"type": "mlflow", "mlflow": {"experiment": "tuneforge-doomed",
                                          "tracking_uri": server.uri}}])
    assert [i.type for i in job.integrations] == ["wandb", "mlflow", "mlflow"]
    assert "tracking_runs" not in (job.model_extra or {})

    mlflow = server.client()
    doomed = None
    deadline = time.monotonic() + 600
    while doomed is None and time.monotonic() < deadline:
        runs = (client.fine_tuning.jobs.retrieve(job.id).model_extra or {}).get(
            "tracking_runs") or []
        doomed = next((r["run_id"] for r in runs[2:]), None)
        time.sleep(0.2)
    assert doomed is not None, "the third integration's run never started"
    mlflow.delete_run(doomed)

    done = wait_status(client, job.id, {"succeeded", "failed", "cancelled"})
    assert done.status == "succeeded", done.error
    events = all_events(client, job.id)
    metrics = [e.data for e in events if e.type == "metrics"]
    steps = [m["step"] for m in metrics]
    assert steps[-1] == metrics[-1]["total_steps"] == 6
    losses = {m["step"]: m["train_loss"] for m in metrics if "full_valid_loss" not in m}
    assert losses[6] < losses[1], f"loss did not fall: {losses}"

    runs = (done.model_extra or {})["tracking_runs"]
    assert [r["type"] for r in runs] == ["wandb", "mlflow", "mlflow"]
    wandb_run, kept = runs[0], runs[1]
    assert wandb_run.get("url") is None  # offline
    assert kept["url"].startswith(f"{server.uri}/#/experiments/")
    assert kept["url"].endswith(f"/runs/{kept['run_id']}")
    messages = [e.message for e in events]
    assert f"MLflow run started: {kept['url']}" in messages
    assert any(m.startswith(f"W&B run started: {wandb_run['run_id']} (offline") for m in messages)
    warnings = [e.message for e in events if e.level == "warn"]
    assert [w for w in warnings if "tracking" in w] == [
        next(w for w in warnings if w.startswith("MLflow tracking stopped"))], warnings
    assert messages[-1] == "The job has successfully completed"

    # W&B: the offline run file written under the worker's data directory.
    files = glob.glob(str(settings.data_dir / "tracking" / "wandb" / job.id / "wandb"
                          / f"offline-run-*-{wandb_run['run_id']}"
                          / f"run-{wandb_run['run_id']}.wandb"))
    assert len(files) == 1, files
    logged = read_wandb_run(Path(files[0]))
    assert (logged.run.project, logged.run.entity, logged.run.display_name) == (
        "tuneforge-test", "team", "arith")
    assert list(logged.run.tags) == ["ci", "tracking"]
    assert logged.config["hyperparameters"] == {"batch_size": 4, "learning_rate_multiplier": 5,
                                                "n_epochs": 2}
    assert logged.config["model"] == MODEL and logged.config["job_id"] == job.id
    assert logged.config["lora"]["rank"] == 16
    assert logged.config["training"]["tuning"] == "lora"  # resolved, at the end
    assert sorted(logged.history) == sorted(set(steps))
    assert {s: logged.history[s]["train_loss"] for s in losses} == losses
    assert logged.summary["status"] == "succeeded"
    assert logged.summary["trained_tokens"] == done.trained_tokens
    assert logged.summary["fine_tuned_model"] == done.fine_tuned_model
    assert logged.exit_code == 0

    # MLflow: read back through its client.
    run = mlflow.get_run(kept["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "arith"
    assert run.data.params["hyperparameters.n_epochs"] == "2"
    assert run.data.params["lora.rank"] == "16" and run.data.params["model"] == MODEL
    assert run.data.params["resolved_hyperparameters.batch_size"] == "4"
    assert run.data.tags["team"] == "search" and run.data.tags["tuneforge.job_id"] == job.id
    assert run.data.tags["tuneforge.fine_tuned_model"] == done.fine_tuned_model
    history = mlflow.get_metric_history(kept["run_id"], "train_loss")
    assert {m.step: m.value for m in history} == pytest.approx(losses)
    assert mlflow.get_experiment(run.info.experiment_id).name == "tuneforge-test"
    assert_no_internals(client, job.id, settings)

"""The `tuneforge` command line, run as a person runs it: a subprocess against the live
server, asserting what it prints and its exit codes; the live views in a pseudo-terminal."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.api.data import chat_jsonl
from tests.conftest import until_validated
from tests.grpc.conftest import MODEL
from tuneforge.domain import EventType, JobStatus, fine_tuned_model_name

SCRIPT = Path(sys.executable).parent / "tuneforge"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07|\x1b[=>78]")


@pytest.fixture(autouse=True)
def _once(settings) -> None:  # type: ignore[no-untyped-def]
    """The CLI is a client of the SDK, which the gRPC tests run on both databases; its
    subprocess runs (about a second each) run on one."""
    if not settings.effective_database_url.startswith("sqlite"):
        pytest.skip("CLI tests run against the SQLite-backed server only")


@pytest.fixture
def cli_env(api_server, grpc_target: str, tenant_a, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNEFORGE_")}
    env.update({
        "TUNEFORGE_BASE_URL": api_server.base_url,
        "TUNEFORGE_API_KEY": tenant_a.api_key,
        "TUNEFORGE_GRPC_TARGET": grpc_target,
        "TUNEFORGE_CLIENT_CONFIG": str(tmp_path / "no-config.toml"),
        "COLUMNS": "160",
    })
    return env


def tuneforge(env: dict[str, str], *args: str,
              cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "tuneforge_client.cli"]
    return subprocess.run([*command, *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr + result.stdout
    return json.loads(result.stdout)


def test_files_commands(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_bytes(chat_jsonl())
    plain = tuneforge(cli_env, "files", "upload", str(path))
    assert plain.returncode == 0, plain.stderr
    file_id = re.search(r"file-\w+", plain.stdout).group(0)  # type: ignore[union-attr]
    assert "uploaded train.jsonl" in plain.stdout

    created = as_json(tuneforge(cli_env, "files", "upload", str(path), "--json"))
    assert created["object"] == "file" and created["bytes"] == len(chat_jsonl())
    listed = as_json(tuneforge(cli_env, "files", "list", "--purpose", "fine-tune", "--json"))
    assert {file_id, created["id"]} <= {f["id"] for f in listed["data"]}
    assert as_json(tuneforge(cli_env, "files", "get", file_id, "--json"))["id"] == file_id
    table = tuneforge(cli_env, "files", "list")
    assert table.returncode == 0 and file_id in table.stdout and "train.jsonl" in table.stdout
    content = tuneforge(cli_env, "files", "content", file_id)
    assert content.returncode == 0 and content.stdout.encode() == chat_jsonl()

    deleted = as_json(tuneforge(cli_env, "files", "delete", file_id, "--json"))
    assert deleted == {"id": file_id, "object": "file", "deleted": True}
    missing = tuneforge(cli_env, "files", "get", file_id, "--json")
    assert missing.returncode == 1
    assert json.loads(missing.stdout)["error"]["code"] == "not_found"
    human = tuneforge(cli_env, "files", "get", file_id)
    assert human.returncode == 1 and "not_found" in human.stderr

    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"ok": 1}\n{"broken": \n')
    refused = tuneforge(cli_env, "files", "upload", str(bad), "--json")
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "invalid_file_format" and "line 2" in error["message"]


def test_jobs_and_models_commands(cli_env: dict[str, str], training_file: str) -> None:
    job = as_json(tuneforge(
        cli_env, "jobs", "create", "--model", MODEL, "--training-file", training_file,
        "--n-epochs", "2", "--learning-rate-multiplier", "auto", "--suffix", "cli",
        "--metadata", "team=cli", "--lora-rank", "8",
        "--lora-target-modules", "q_proj,v_proj", "--json"))
    assert job["status"] == "validating_files" and job["suffix"] == "cli"
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert job["lora"]["rank"] == 8 and job["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert job["metadata"] == {"team": "cli"}

    listed = as_json(tuneforge(cli_env, "jobs", "list", "--metadata", "team=cli", "--json"))
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    got = as_json(tuneforge(cli_env, "jobs", "get", job["id"], "--json"))
    assert {**got, "status": job["status"]} == job  # the API queues it meanwhile
    events = as_json(tuneforge(cli_env, "jobs", "events", job["id"], "--json"))
    assert events["data"][-1]["message"] == f"Created fine-tuning job: {job['id']}"
    paused = tuneforge(cli_env, "jobs", "pause", job["id"], "--json")
    assert paused.returncode == 1 and json.loads(paused.stdout)["error"]["code"] == \
        "invalid_state"
    cancelled = as_json(tuneforge(cli_env, "jobs", "cancel", job["id"], "--json"))
    assert cancelled["status"] == "cancelled"
    assert tuneforge(cli_env, "jobs", "cancel", job["id"]).returncode == 1
    assert as_json(tuneforge(cli_env, "jobs", "checkpoints", job["id"], "--json"))["data"] == []

    invalid = tuneforge(cli_env, "jobs", "create", "--model", "gpt-9", "--training-file",
                        training_file, "--json")
    assert invalid.returncode == 1
    assert json.loads(invalid.stdout)["error"]["param"] == "model"

    models = as_json(tuneforge(cli_env, "models", "list", "--json"))
    assert MODEL in [m["id"] for m in models["data"]]
    refused = tuneforge(cli_env, "models", "delete", MODEL, "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["type"] == "permission_error"

    over_rest = as_json(tuneforge(cli_env, "--transport", "rest", "jobs", "get", job["id"],
                                  "--json"))
    assert over_rest == cancelled


def test_configuration_sources(cli_env: dict[str, str], tenant_a, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    no_key = {k: v for k, v in cli_env.items() if k != "TUNEFORGE_API_KEY"}
    unauthenticated = tuneforge(no_key, "models", "list")
    assert unauthenticated.returncode == 1 and "invalid_api_key" in unauthenticated.stderr
    # A flag wins over the environment.
    wrong = {**cli_env, "TUNEFORGE_API_KEY": "tf-wrong"}
    assert tuneforge(wrong, "--api-key", tenant_a.api_key, "models", "list").returncode == 0
    # The config file, when nothing else says.
    config = tmp_path / "config.toml"
    config.write_text(f'api_key = "{tenant_a.api_key}"\n'
                      f'base_url = "{cli_env["TUNEFORGE_BASE_URL"]}"\n'
                      f'grpc_target = "{cli_env["TUNEFORGE_GRPC_TARGET"]}"\n')
    only_file = {k: v for k, v in no_key.items()
                 if k not in ("TUNEFORGE_BASE_URL", "TUNEFORGE_GRPC_TARGET")}
    only_file["TUNEFORGE_CLIENT_CONFIG"] = str(config)
    assert tuneforge(only_file, "models", "list", "--json").returncode == 0


def test_server_commands_come_from_the_plugin(cli_env: dict[str, str]) -> None:
    top = tuneforge(cli_env, "--help")
    assert top.returncode == 0
    for command in ("files", "jobs", "models", "chat", "server", "keys"):
        assert command in top.stdout
    assert "--grpc-port" in tuneforge(cli_env, "server", "--help").stdout
    assert tuneforge(cli_env, "keys", "--help").returncode == 0


def test_keys_create_makes_a_working_key_for_a_named_organization(
        cli_env: dict[str, str], settings) -> None:  # type: ignore[no-untyped-def]
    from openai import AuthenticationError, OpenAI

    server_env = {**cli_env, **settings.to_env()}
    name = f"acme-{os.getpid()}"
    outputs = [tuneforge(server_env, "keys", "create", "--org", name, "--name", "ci")
               for _ in range(2)]
    assert all(o.returncode == 0 for o in outputs), [o.stderr for o in outputs]
    orgs = [re.search(r"organization: (org-\S+)", o.stdout).group(1) for o in outputs]  # type: ignore[union-attr]
    keys = [re.search(r"api key: +(tf-\S+)", o.stdout).group(1) for o in outputs]  # type: ignore[union-attr]
    assert orgs[0] == orgs[1] and keys[0] != keys[1]  # a second key for the same organization
    for key in keys:
        with OpenAI(base_url=cli_env["TUNEFORGE_BASE_URL"], api_key=key, max_retries=0) as c:
            assert c.files.list().data == []  # a new tenant sees nothing of the others'
    with OpenAI(base_url=cli_env["TUNEFORGE_BASE_URL"], api_key=keys[0] + "x",
                max_retries=0) as c, pytest.raises(AuthenticationError):
        c.files.list()


# ---- in a pseudo-terminal ----------------------------------------------------------------


class Terminal:
    """A command on a pseudo-terminal (120x40) whose screen output is collected."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {k: v for k, v in env.items() if k != "COLUMNS"}
        command = [str(SCRIPT)] if SCRIPT.exists() else \
            [sys.executable, "-m", "tuneforge_client.cli"]
        self.process = subprocess.Popen([*command, *args], stdin=slave, stdout=slave,
                                        stderr=slave, env={**env, "TERM": "xterm-256color"},
                                        close_fds=True, start_new_session=True)
        os.close(slave)
        self.master = master
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.chunks.append(data)

    @property
    def text(self) -> str:
        return ANSI.sub("", b"".join(self.chunks).decode(errors="replace"))

    async def wait_for(self, pattern: str, within: float = 15.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not re.search(pattern, self.text):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{pattern!r} never showed; screen:\n{self.text}")
            await asyncio.sleep(0.05)

    async def exit_code(self, within: float = 20.0) -> int:
        code = await asyncio.wait_for(asyncio.to_thread(self.process.wait), within)
        self.reader.join(timeout=5)
        os.close(self.master)
        return code


async def test_follow_live_view_until_success(cli_env: dict[str, str], training_file: str,
                                              tf, services) -> None:  # type: ignore[no-untyped-def]
    job = tf.jobs.create(model=MODEL, training_file=training_file, suffix="live")
    term = Terminal(["jobs", "follow", job.id], cli_env)
    await term.wait_for(rf"{job.id}\s+(validating_files|queued)")
    await term.wait_for("Validating training file")

    assert await until_validated(services, job.id) == "queued"
    await services.protocol.advance(job.id, [JobStatus.QUEUED], JobStatus.RUNNING,
                                    message="Fine-tuning job started")
    await term.wait_for(rf"{job.id}\s+running")
    for step, loss in ((1, 2.5), (2, 1.75)):
        await services.protocol.add_event(
            job.id, f"Step {step}/4: training loss={loss}", type=EventType.METRICS,
            data={"step": step, "total_steps": 4, "train_loss": loss, "valid_loss": loss + 0.5})
    await term.wait_for(r"step 2/4\s+train loss 1\.7500\s+valid loss 2\.2500\s+ETA")
    assert term.process.poll() is None  # still following

    name = fine_tuned_model_name(MODEL, job.organization_id, "live", job.id)
    await services.protocol.succeed(job.id, fine_tuned_model=name, result_files=[],
                                    trained_tokens=10)
    assert await term.exit_code() == 0
    assert re.search(rf"job {job.id} succeeded:\s+{re.escape(name)}", term.text)


async def test_follow_exits_non_zero_when_the_job_fails(cli_env: dict[str, str],
                                                        training_file: str, tf,  # type: ignore[no-untyped-def]
                                                        services) -> None:
    job = tf.jobs.create(model=MODEL, training_file=training_file)
    term = Terminal(["jobs", "follow", job.id], cli_env)
    await term.wait_for(rf"{job.id}\s+(validating_files|queued)")
    await services.protocol.fail(job.id, code="invalid_training_file",
                                 message="line 3: bad example")
    assert await term.exit_code() == 1
    assert re.search(r"failed:\s+line 3: bad example", term.text), term.text

    # --json: one object per line, for scripts; the exit code says how the job ended.
    lines = tuneforge(cli_env, "jobs", "follow", job.id, "--json")
    assert lines.returncode == 1
    updates = [json.loads(line) for line in lines.stdout.splitlines()]
    assert updates[0]["type"] == "job" and updates[-1]["type"] in ("job", "event")
    assert [u["job"]["status"] for u in updates if u["type"] == "job"][-1] == "failed"
    assert updates[-1]["event" if updates[-1]["type"] == "event" else "job"]


async def test_upload_progress_bar(cli_env: dict[str, str], tmp_path: Path) -> None:
    line = json.dumps({"messages": [{"role": "user", "content": "x" * 500}]}).encode()
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join([line] * 6000) + b"\n")  # ~3 MB
    term = Terminal(["files", "upload", str(path)], cli_env)
    assert await term.exit_code() == 0
    text = term.text
    assert re.search(r"big\.jsonl", text) and re.search(r"3\.\d/3\.\d MB", text), text
    assert re.search(r"(MB|kB)/s", text) and re.search(r"0:00:00", text), text
    assert re.search(r"uploaded big\.jsonl \(3\.\d MiB\): file-\w+", text), text

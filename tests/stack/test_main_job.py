"""The README's main-job command and `tuneforge up`, run as a person runs them.

One data directory for the module: the main job fine-tunes on it and stops everything; then
`tuneforge up` starts on the same directory and must find every file, job and model the main
job stored, refuse a second stack on its ports, and leave no process behind when stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.conftest import MODEL_CACHE, REPO
from tuneforge.processes import WeedPorts, free_port

pytestmark = [pytest.mark.vllm, pytest.mark.train]

TAUGHT_PREFIX = "ANSWER:"


class StackRun:
    """A `tuneforge` stack command on its own free ports, with every descendant it ever had."""

    def __init__(self, data_dir: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {
            **os.environ,
            "TUNEFORGE_DATA_DIR": str(data_dir), "TUNEFORGE_PORT": str(self.port),
            "TUNEFORGE_GRPC_PORT": str(free_port()),
            "TUNEFORGE_EMBEDDED__REDIS_PORT": str(free_port()),
            "TUNEFORGE_EMBEDDED__S3_PORT": str(free_port()),
            # weed mini's other ports default to S3's + 1..8, which another process may hold.
            **{f"TUNEFORGE_EMBEDDED__S3_{role.upper()}_PORT": str(port)
               for role, port in dataclasses.asdict(WeedPorts.free()).items()},
            "TUNEFORGE_MODEL_CACHE_DIR": str(MODEL_CACHE),
            # Every line reaches the output file at once: a failure shows where a stop got to.
            "PYTHONUNBUFFERED": "1",
        }
        self.output = data_dir / f"{args[-1] if args else 'run'}-{time.time_ns()}.out"
        self.process = subprocess.Popen(args, cwd=REPO, env=self.env,
                                        stdout=self.output.open("wb"), stderr=subprocess.STDOUT,
                                        start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def watch_descendants(self) -> None:
        try:
            for child in psutil.Process(self.process.pid).children(recursive=True):
                self.seen.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            pass

    def wait(self, within_s: float) -> int:
        deadline = time.monotonic() + within_s
        while self.process.poll() is None:
            assert time.monotonic() < deadline, (
                f"still running after {within_s} s (alive: {self.alive_commands()}):\n"
                f"{self.text()}")
            self.watch_descendants()
            time.sleep(0.5)
        return self.process.returncode

    def left_behind(self) -> list[str]:
        _, alive = psutil.wait_procs(list(self.seen.values()), timeout=30)
        return [f"{p.pid} {p.name()}" for p in alive]

    def alive_commands(self) -> list[str]:
        commands = []
        for pid in [self.process.pid, *self.seen]:
            with contextlib.suppress(psutil.Error):
                commands.append(f"{pid} {' '.join(psutil.Process(pid).cmdline()[:4])}")
        return commands

    def alive_names(self) -> set[str]:
        names = set()
        for process in self.seen.values():
            try:
                names.add(process.name())
            except psutil.NoSuchProcess:
                pass
        return names

    def child_running(self, module: str, default: psutil.Process | None = None
                      ) -> psutil.Process:
        """The live descendant running `python -m module` (or `default` if there is none)."""
        self.watch_descendants()
        for process in self.seen.values():
            try:
                if process.is_running() and module in process.cmdline():
                    return process
            except psutil.NoSuchProcess:
                pass
        assert default is not None, f"no {module} process:\n{self.text()}"
        return default

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        for process in self.seen.values():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="module")
def main_job(data_dir: Path) -> tuple[StackRun, dict]:
    result_path = data_dir / "result.json"
    run = StackRun(data_dir, ["bash", "scripts/main.sh", "--max-examples", "32", "--epochs", "3",
                              "--exit-after", "--result-json", str(result_path)])
    try:
        assert run.wait(within_s=1500) == 0, run.text()
    finally:
        run.kill()
    return run, json.loads(result_path.read_text())


def test_main_job_teaches_the_answer_format(main_job: tuple[StackRun, dict]) -> None:
    run, result = main_job
    assert result["status"] == "succeeded" and result["model"].startswith("ft:")
    answers = result["answers"]
    assert len(answers) == 4
    taught = [a for a in answers if a["fine_tuned"].startswith(TAUGHT_PREFIX)]
    untaught_base = [a for a in answers if not a["base"].startswith(TAUGHT_PREFIX)]
    assert len(taught) >= 3, answers
    assert len(untaught_base) == 4, answers
    output = run.text()
    assert "Created fine-tuning job" in output and "step" in output
    assert "from openai import OpenAI" in output  # how to use the running service


def test_main_job_stops_every_process_it_started(main_job: tuple[StackRun, dict]) -> None:
    run, _ = main_job
    assert len(run.seen) >= 4, "the main job's stack was never seen running"
    assert not run.left_behind()


def wait_for_api(run: StackRun) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert run.process.poll() is None, run.text()
        run.watch_descendants()
        try:
            if httpx.get(f"{run.base_url}/models", timeout=2).status_code == 401:
                return json.loads((run.data_dir / "credentials.json").read_text())["api_key"]
        except (httpx.HTTPError, FileNotFoundError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"tuneforge up did not come up:\n{run.text()}")


def test_up_on_the_same_data_keeps_everything_and_stops_on_ctrl_c(
    main_job: tuple[StackRun, dict], data_dir: Path
) -> None:
    _, result = main_job
    up = StackRun(data_dir, [sys.executable, "-m", "stack.cli", "up"])
    try:
        key = wait_for_api(up)
        client = openai.OpenAI(base_url=up.base_url, api_key=key, max_retries=0)
        job = client.fine_tuning.jobs.retrieve(result["job"])
        assert job.status == "succeeded" and job.fine_tuned_model == result["model"]
        training = client.files.retrieve(job.training_file)
        assert client.files.content(training.id).read().count(b"\n") == 32
        assert result["model"] in {m.id for m in client.models.list()}

        clash = subprocess.run([sys.executable, "-m", "stack.cli", "up"], cwd=REPO,
                               env={**up.env, "TUNEFORGE_DATA_DIR": str(data_dir / "other")},
                               capture_output=True, text=True, timeout=120)
        assert clash.returncode == 2 and "already in use" in clash.stderr, clash.stderr

        # A child that dies is restarted.
        worker = up.child_running("trainer.worker")
        worker.kill()
        deadline = time.monotonic() + 60
        while up.child_running("trainer.worker", default=worker).pid == worker.pid:
            assert time.monotonic() < deadline, up.text()
            time.sleep(0.5)
        assert "worker exited with" in up.text()

        up.watch_descendants()
        assert up.alive_names() >= {"weed", "valkey-server"}
        os.killpg(up.process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the group
        assert up.wait(within_s=120) == 0, up.text()
        assert "stopping" in up.text()
        assert not up.left_behind()
    finally:
        up.kill()


def test_second_main_job_run_reuses_the_trained_model(
    main_job: tuple[StackRun, dict], data_dir: Path
) -> None:
    _, first = main_job
    result_path = data_dir / "result-again.json"
    again = StackRun(data_dir, ["bash", "scripts/main.sh", "--max-examples", "32", "--epochs",
                                "3", "--exit-after", "--result-json", str(result_path)])
    try:
        assert again.wait(within_s=900) == 0, again.text()
    finally:
        again.kill()
    second = json.loads(result_path.read_text())
    assert "Reusing" in again.text() and "Created fine-tuning job" not in again.text()
    assert (second["job"], second["model"]) == (first["job"], first["model"])
    assert sum(a["fine_tuned"].startswith(TAUGHT_PREFIX) for a in second["answers"]) >= 3
    assert not again.left_behind()

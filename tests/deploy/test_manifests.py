"""Every kustomization renders and validates offline, and its pieces fit together.

Schema validation uses kubernetes-validate's bundled OpenAPI schemas, in strict mode (unknown
fields are errors), for the oldest Kubernetes the manifests support (1.30: the preStop ``sleep``
action) and the newest the validator knows. ServiceMonitor is a CRD whose schema ships with the
Prometheus Operator, not with any package we can install offline: it is skipped by the schema
check and checked here structurally instead (selector, port, path against the real Service).
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_paths import K8S, KUSTOMIZATIONS, kustomization_id

from reward_service.serve.settings import Settings

KUBERNETES_VERSIONS = ("1.30", "1.37")
CRD_GROUPS = ("monitoring.coreos.com/",)
SERVING = ("base", "overlays/cpu", "overlays/gpu")


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def validate(
    tools: Path, docs: list[dict], folder: Path, version: str
) -> subprocess.CompletedProcess:
    """Runs kubernetes-validate --strict on the non-CRD documents, one file each."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, doc in enumerate(d for d in docs if not d["apiVersion"].startswith(CRD_GROUPS)):
        path = folder / f"{i:02d}-{doc['kind']}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(str(path))
    return subprocess.run(
        [str(tools / "kubernetes-validate"), "--strict", "-k", version, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_kustomization_is_rendered(objects: dict[str, list[dict]]) -> None:
    assert set(objects) >= {*SERVING, "monitoring", "examples/ppo-job"}
    assert all(objects[name] for name in objects)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", [kustomization_id(k) for k in KUSTOMIZATIONS])
def test_manifests_validate_against_kubernetes_schemas(
    tools: Path, objects: dict[str, list[dict]], tmp_path: Path, name: str, version: str
) -> None:
    result = validate(tools, objects[name], tmp_path, version)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Couldn't find schema" not in result.stdout + result.stderr


def test_schema_validation_catches_a_broken_manifest(
    tools: Path, objects: dict[str, list[dict]], tmp_path: Path
) -> None:
    """The check above can fail: a misspelt field and a wrong type are both refused."""
    deployment = find(objects["overlays/cpu"], "Deployment")
    misspelt = yaml.safe_load(yaml.safe_dump(deployment))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGets"] = {}
    wrong_type = yaml.safe_load(yaml.safe_dump(deployment))
    wrong_type["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "soon"
    for i, broken in enumerate((misspelt, wrong_type)):
        result = validate(tools, [broken], tmp_path / str(i), KUBERNETES_VERSIONS[-1])
        assert result.returncode != 0


@pytest.mark.parametrize("name", SERVING)
def test_selectors_tie_the_service_together(objects: dict[str, list[dict]], name: str) -> None:
    docs = objects[name]
    deployment = find(docs, "Deployment", "reward-service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    port_names = {p["name"] for p in container["ports"]}

    def selects(selector: dict) -> bool:
        return selector.items() <= pod_labels.items()

    assert selects(deployment["spec"]["selector"]["matchLabels"])
    service = find(docs, "Service", "reward-service")
    assert selects(service["spec"]["selector"])
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    assert selects(find(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"])
    assert selects(find(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"])
    monitor = find(docs, "ServiceMonitor")
    service_labels = service["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    assert [e["path"] for e in monitor["spec"]["endpoints"]] == ["/metrics"]
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "reward-service",
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2, "one replica cannot survive a drain with the PDB"


def volume_sources(pod: dict) -> dict[str, dict]:
    return {v["name"]: v for v in pod["volumes"]}


@pytest.mark.parametrize("name", SERVING)
def test_pod_mounts_what_its_settings_name(objects: dict[str, list[dict]], name: str) -> None:
    docs = objects[name]
    pod = find(docs, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    (config_ref,) = container["envFrom"]
    settings = find(docs, "ConfigMap", config_ref["configMapRef"]["name"])["data"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = volume_sources(pod)

    assert mounts[settings["REWARD_SERVICE_MODEL_REPO"]]["readOnly"] is True
    models = volumes[mounts[settings["REWARD_SERVICE_MODEL_REPO"]]["name"]]
    claim = find(docs, "PersistentVolumeClaim", models["persistentVolumeClaim"]["claimName"])
    assert "ReadWriteMany" in claim["spec"]["accessModes"], "replicas share the repository"
    assert models["persistentVolumeClaim"]["readOnly"] is True

    keys_file = Path(settings["REWARD_SERVICE_API_KEYS_FILE"])
    keys_volume = volumes[mounts[str(keys_file.parent)]["name"]]
    secret = find(docs, "Secret", keys_volume["secret"]["secretName"])
    assert keys_file.name in secret["data"]
    assert settings["REWARD_SERVICE_HOST"] == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(settings["REWARD_SERVICE_PORT"]) == ports["http"]
    assert int(settings["REWARD_SERVICE_GRPC_PORT"]) == ports["grpc"]
    service_ports = {p["name"]: p["targetPort"] for p in find(docs, "Service")["spec"]["ports"]}
    assert service_ports == {"http": "http", "grpc": "grpc"}


@pytest.mark.parametrize("name", SERVING)
def test_settings_are_valid_service_settings(
    objects: dict[str, list[dict]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every variable the ConfigMap sets is a real setting, and the service accepts its value."""
    data = find(objects[name], "ConfigMap", None)["data"]
    fields = {f"REWARD_SERVICE_{f.upper()}" for f in Settings.model_fields}
    assert set(data) <= fields, f"unknown settings: {sorted(set(data) - fields)}"
    for key in list(os.environ):
        if key.startswith("REWARD_SERVICE_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert str(settings.model_repo) == data["REWARD_SERVICE_MODEL_REPO"]


@pytest.mark.parametrize("name", SERVING)
def test_rollout_and_shutdown_timing(objects: dict[str, list[dict]], name: str) -> None:
    docs = objects[name]
    deployment = find(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    drain = float(find(docs, "ConfigMap")["data"]["REWARD_SERVICE_DRAIN_SECONDS"])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop + drain < pod["terminationGracePeriodSeconds"]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Liveness on the gRPC door's server-wide health check (SERVING through a drain).
    settings = find(docs, "ConfigMap")["data"]
    assert container["livenessProbe"]["grpc"]["port"] == int(settings["REWARD_SERVICE_GRPC_PORT"])
    assert "service" not in container["livenessProbe"]["grpc"]
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1


@pytest.mark.parametrize("name", [*SERVING, "examples/ppo-job", "examples/model-loader"])
def test_pods_run_locked_down(objects: dict[str, list[dict]], name: str) -> None:
    workload = next(d for d in objects[name] if d["kind"] in ("Deployment", "Job", "Pod"))
    pod = workload["spec"] if workload["kind"] == "Pod" else workload["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert container["resources"]["limits"]["memory"]
        assert container["resources"]["requests"]["cpu"]


def test_only_the_gpu_overlay_asks_for_gpus(objects: dict[str, list[dict]]) -> None:
    def pod(name: str) -> dict:
        return find(objects[name], "Deployment")["spec"]["template"]["spec"]

    gpu = pod("overlays/gpu")
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu[
        "tolerations"
    ]
    assert gpu["containers"][0]["image"].endswith("-gpu")
    cpu = pod("overlays/cpu")
    assert "nvidia.com/gpu" not in cpu["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in cpu
    assert cpu["containers"][0]["image"].endswith("-cpu")


def test_network_policy_admits_trainers_and_prometheus_only(objects: dict[str, list[dict]]) -> None:
    policy = find(objects["overlays/cpu"], "NetworkPolicy")
    job_namespace = find(objects["examples/ppo-job"], "Job")["metadata"]["namespace"]
    peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
    name_label = "kubernetes.io/metadata.name"
    namespaces = {p["namespaceSelector"]["matchLabels"][name_label] for p in peers}
    assert namespaces == {job_namespace, "monitoring"}
    trainers = next(r for r in policy["spec"]["ingress"] if "podSelector" not in r["from"][0])
    assert {p["port"] for p in trainers["ports"]} == {"http", "grpc"}, "trainers speak both"
    prometheus = next(p for p in peers if "podSelector" in p)
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert policy["spec"]["egress"] == []
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}


def test_ppo_job_reaches_the_service_by_its_name(
    objects: dict[str, list[dict]], tmp_path: Path
) -> None:
    """The Job's command line parses with ppo-client's own parser, its config file builds a
    PPOConfig, names the rendered Service, and carries a key the service accepts."""
    from ppo_client.cli import build_parser
    from ppo_client.config import PPOConfig

    service = find(objects["overlays/cpu"], "Service", "reward-service")
    job_docs = objects["examples/ppo-job"]
    pod = find(job_docs, "Job")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config_volume = volume_sources(pod)["config"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")["mountPath"]
    secret = find(job_docs, "Secret", config_volume["secret"]["secretName"])
    local = tmp_path / "ppo.toml"
    local.write_bytes(base64.b64decode(secret["data"]["ppo.toml"]))
    args = [str(local) if a == f"{mount}/ppo.toml" else a for a in container["args"]]
    parsed = build_parser().parse_args(args)
    assert parsed.config == str(local), "the Job must read the mounted config file"
    config = PPOConfig(**PPOConfig.from_file(parsed.config))

    meta = service["metadata"]
    port = service["spec"]["ports"][0]["port"]
    assert config.reward_url == [
        f"http://{meta['name']}.{meta['namespace']}.svc.cluster.local:{port}"
    ]
    keys = find(objects["overlays/cpu"], "Secret")["data"]["api-keys"]
    served = {
        line.strip()
        for line in base64.b64decode(keys).decode().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert config.reward_api_key in served
    egress_ports = {
        p["port"]
        for rule in find(job_docs, "NetworkPolicy")["spec"]["egress"]
        for p in rule["ports"]
    }
    assert port in egress_ports


def test_hpa_metric_is_the_one_prometheus_adapter_publishes(objects: dict[str, list[dict]]) -> None:
    values = yaml.safe_load((K8S / "monitoring" / "prometheus-adapter-values.yaml").read_text())
    published = {rule["name"]["as"] for rule in values["rules"]["custom"]}
    hpa = find(objects["overlays/cpu"], "HorizontalPodAutoscaler")
    wanted = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    assert wanted and wanted <= published

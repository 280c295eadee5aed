"""deploy/k8s: the Kubernetes manifests and the Dagster chart's values, checked offline.

Every manifest is validated, strictly (an unknown field fails), against the Kubernetes
JSON schemas that the `kubernetes-validate` package ships (no download at run time), for
the oldest and the newest Kubernetes release this deployment supports. Then the
project's own rules, which a schema cannot express: every container pinned, probed,
bounded and unprivileged, every secret from the operator's Secret (none committed), the
autoscaler over the API, ingress to the pods restricted, and the Dagster chart's values
pointing at the platform's Dagster image."""

import copy
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer
import yaml

from api.common.operations import operations_router
from warriors.cli import app as cli_app
from warriors.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy/k8s"
KUSTOMIZATION = K8S / "kustomization.yaml"
DAGSTER_VALUES = K8S / "dagster-values.yaml"
DEPLOYMENT_DOC = ROOT / "docs/deployment.md"
# The oldest Kubernetes release these manifests are meant for, and the newest whose
# schemas kubernetes-validate ships (1.37 in kubernetes-validate 1.37.0).
KUBERNETES_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
NAMESPACE = "warriors"
SECRET = "warriors-secrets"
CONFIG_MAP = "warriors-config"
USER_ID = 10001  # the Dockerfile's `warriors`
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Variables a container may set besides the platform's settings: prometheus_client's
# multiprocess folder and uvicorn's trusted proxies (as in docker-compose.yml).
NOT_SETTINGS = {"PROMETHEUS_MULTIPROC_DIR", "FORWARDED_ALLOW_IPS"}
# A variable that holds a secret by its name, or a URL with a password in it.
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|_URL$")
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(path.read_text()) if document]


def _manifest_files() -> list[Path]:
    return sorted(path for path in K8S.glob("*.yaml") if path not in (KUSTOMIZATION, DAGSTER_VALUES))


def _resources() -> list[dict[str, Any]]:
    return [document for path in _manifest_files() for document in _documents(path)]


def _named(kind: str, name: str) -> dict[str, Any]:
    (resource,) = [r for r in _resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return resource


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod_spec: dict[str, Any] = spec["template"]["spec"]
    return pod_spec


def _workloads() -> list[dict[str, Any]]:
    return [resource for resource in _resources() if resource["kind"] in WORKLOADS]


def _containers(pod_spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from pod_spec.get("initContainers", [])
    yield from pod_spec["containers"]


def _quantity(text: str | int) -> Decimal:
    """A Kubernetes quantity (`500m`, `2`, `384Mi`, `1Gi`) as a number."""
    units = {"m": Decimal("0.001"), "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30)}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?", str(text))
    assert match, f"not a quantity this check reads: {text!r}"
    return Decimal(match[1]) * units.get(match[2] or "", Decimal(1))


def _secret_keys_documented() -> set[str]:
    """The keys docs/deployment.md tells the operator to put in warriors-secrets."""
    text = DEPLOYMENT_DOC.read_text()
    block = re.search(
        r"```sh\n(?P<body>[^`]*?kubectl[^`]*? create secret generic warriors-secrets[^`]*?)```", text
    )
    assert block, "docs/deployment.md does not show how to create warriors-secrets"
    return set(re.findall(r"^([a-z][a-z0-9-]*)=", block["body"], flags=re.MULTILINE))


# The schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    resources = _resources()
    assert {r["kind"] for r in resources} >= {
        "Namespace",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Job",
        "ConfigMap",
        "NetworkPolicy",
    }
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_validation_is_strict() -> None:
    """An unknown field (a typo) and a wrong type both fail: the check above can fail."""
    deployment = _named("Deployment", "warriors-api")
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSIONS[-1], strict=True)
    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_and_sets_the_image() -> None:
    kustomization: dict[str, Any] = yaml.safe_load(KUSTOMIZATION.read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in _manifest_files()]
    assert kustomization["namespace"] == NAMESPACE
    (image,) = kustomization["images"]
    images = {c["image"] for w in _workloads() for c in _containers(_pod_spec(w))}
    assert images == {f"{image['name']}:{image['newTag']}"}, "the manifests' image is not the kustomization's"
    for resource in _resources():
        if resource["kind"] != "Namespace":
            assert resource["metadata"].get("namespace") == NAMESPACE, resource["metadata"]["name"]
        assert resource["metadata"]["labels"]["app.kubernetes.io/part-of"] == "warriors"


# Every container ---------------------------------------------------------------------------


def test_every_container_is_pinned_bounded_and_unprivileged() -> None:
    workloads = _workloads()
    assert {w["metadata"]["name"] for w in workloads} == {
        "warriors-api",
        "warriors-projector",
        "warriors-relay",
        "warriors-migrate",
    }
    for workload in workloads:
        name = workload["metadata"]["name"]
        pod = _pod_spec(workload)
        template_labels = (workload["spec"].get("template") or {}).get("metadata", {}).get("labels", {})
        assert template_labels.get("app.kubernetes.io/part-of") == "warriors", f"{name}: the policies miss it"
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(field), f"{name}: {field}"
        assert pod["automountServiceAccountToken"] is False, name
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, f"{name}: hostPath volume {volume['name']}"
        pod_security = pod["securityContext"]
        assert pod_security["runAsNonRoot"] is True, name
        assert pod_security["runAsUser"] == USER_ID, name
        assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in _containers(pod):
            where = f"{name}/{container['name']}"
            image = re.fullmatch(r"(?P<repository>[^:@\s]+):(?P<tag>[\w.-]+)", container["image"])
            assert image, f"{where}: image not pinned by tag: {container['image']}"
            assert image["tag"] != "latest", where
            assert container["imagePullPolicy"] == "IfNotPresent", where
            security = container["securityContext"]
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert not security.get("privileged"), where
            assert security.get("runAsNonRoot", True) is True, where
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request, limit = resources["requests"][resource], resources["limits"][resource]
                assert _quantity(request) <= _quantity(limit), f"{where}: {resource} request over its limit"
            # Writable places on a read-only root: the mounted ones only.
            mounts = {mount["name"] for mount in container.get("volumeMounts", [])}
            assert mounts <= {volume["name"] for volume in pod.get("volumes", [])}, where
            if workload["kind"] != "Job":  # a Job runs to completion: nothing to probe
                assert container.get("livenessProbe"), f"{where}: no liveness probe"
                assert container.get("readinessProbe"), f"{where}: no readiness probe"


def test_secrets_come_from_the_operators_secret_and_none_is_committed() -> None:
    resources = _resources()
    assert "Secret" not in {r["kind"] for r in resources}, "a Secret manifest (with values) is committed"
    settings = {name.upper() for name in Settings.model_fields}
    config_map = _named("ConfigMap", CONFIG_MAP)
    for key, value in config_map["data"].items():
        assert key in settings, f"the ConfigMap sets {key}, which nothing reads"
        assert not SECRET_NAME.search(key), f"a secret in the ConfigMap: {key}"
        assert not CREDENTIALS_IN_URL.search(value), f"a password in the ConfigMap: {key}"
    referenced: dict[str, set[str]] = {}
    for workload in _workloads():
        name = workload["metadata"]["name"]
        for container in _containers(_pod_spec(workload)):
            for source in container.get("envFrom", []):
                assert source == {"configMapRef": {"name": CONFIG_MAP}}, f"{name}: {source}"
            for variable in container.get("env", []):
                assert variable["name"] in settings | NOT_SETTINGS, (
                    f"{name}: {variable['name']} is read by nothing"
                )
                if "value" in variable:
                    assert not SECRET_NAME.search(variable["name"]) or variable["name"].startswith(
                        "METRICS_"
                    ), f"{name}: {variable['name']} is written in the manifest"
                    assert not CREDENTIALS_IN_URL.search(variable["value"]), f"{name}: {variable['name']}"
                else:
                    ref = variable["valueFrom"]["secretKeyRef"]
                    if (name, variable["name"]) == ("warriors-migrate", "DAGSTER_DB_PASSWORD"):
                        # The password the Dagster chart logs in to its storage with, given
                        # to its role (warriors_dagster) by the migration: one secret, not two.
                        assert ref == {"name": _values()["global"]["postgresqlSecretName"],
                                       "key": "postgresql-password"}  # fmt: skip
                        assert _values()["postgresql"]["postgresqlUsername"] == "warriors_dagster"
                        continue
                    assert ref["name"] == SECRET, f"{name}: {variable['name']} from {ref['name']}"
                    referenced.setdefault(ref["key"], set()).add(name)
    # Only the one-shot migration holds the owner's URL and the roles' passwords.
    for key in ("owner-database-url", "api-db-password", "projector-db-password"):
        assert referenced[key] == {"warriors-migrate"}, key
    assert referenced["api-database-url"] == {"warriors-api"}
    # The operator is told to create every key something reads (and no other).
    values_keys = {
        variable["valueFrom"]["secretKeyRef"]["key"]
        for deployment in _values()["dagster-user-deployments"]["deployments"]
        for variable in deployment["env"]
        if "valueFrom" in variable
    }
    assert _secret_keys_documented() == set(referenced) | values_keys


# The topology ------------------------------------------------------------------------------


def test_the_api_scales_on_cpu_behind_its_service_with_probes_the_api_answers() -> None:
    deployment = _named("Deployment", "warriors-api")
    assert "replicas" not in deployment["spec"], "the autoscaler owns the API's replicas"
    hpa = _named("HorizontalPodAutoscaler", "warriors-api")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "warriors-api",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource"
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "cpu" in container["resources"]["requests"], "CPU utilization is relative to the request"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = _named("Service", "warriors-api")
    assert service["spec"]["selector"].items() <= labels.items()
    port_names = {port["name"]: port["containerPort"] for port in container["ports"]}
    (service_port,) = service["spec"]["ports"]
    assert port_names[service_port["targetPort"]] == 8000  # the image's uvicorn

    # /health/live for liveness (and startup), /health/ready for readiness: routes the
    # API serves, asked with a Host it accepts (ALLOWED_HOSTS lists the Service's name).
    async def ready() -> dict[str, str]:
        return {}

    routes = {getattr(route, "path", None) for route in operations_router(ready).routes}
    allowed = _named("ConfigMap", CONFIG_MAP)["data"]["ALLOWED_HOSTS"].split(",")
    assert service["metadata"]["name"] in allowed
    probes = {
        "startupProbe": "/health/live",
        "livenessProbe": "/health/live",
        "readinessProbe": "/health/ready",
    }
    for probe, path in probes.items():
        http = container[probe]["httpGet"]
        assert http["path"] == path, probe
        assert path in routes, path
        assert http["port"] in port_names, probe
        assert {"name": "Host", "value": service["metadata"]["name"]} in http["httpHeaders"], probe
    assert "warriors-api" in {
        pdb["metadata"]["name"] for pdb in _resources() if pdb["kind"] == "PodDisruptionBudget"
    }


def test_projectors_relay_and_migration_run_the_platforms_commands() -> None:
    commands = set(typer.main.get_command(cli_app).commands)  # type: ignore[attr-defined]
    projector, relay = _named("Deployment", "warriors-projector"), _named("Deployment", "warriors-relay")
    assert projector["spec"]["replicas"] == 3
    assert relay["spec"]["replicas"] == 1, "one relay: a second only waits on the first's lock"
    for deployment, command in ((projector, "project"), (relay, "relay")):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["warriors", command]
        assert command in commands
        env = {variable["name"]: variable for variable in container["env"]}
        assert env["DATABASE_URL"]["valueFrom"]["secretKeyRef"]["key"] == "projector-database-url"
        # Their probes ask the metrics endpoint they serve (METRICS_PORT, on every address).
        metrics_port = next(port for port in container["ports"] if port["name"] == "metrics")
        assert env["METRICS_PORT"]["value"] == str(metrics_port["containerPort"])
        assert env["METRICS_HOST"]["value"] == "0.0.0.0"
        for probe in ("livenessProbe", "readinessProbe"):
            assert container[probe]["httpGet"]["port"] == "metrics", probe
    job = _named("Job", "warriors-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    steps = [step.strip() for step in script.split("&&")]
    assert steps == ["warriors migrate", "warriors db-roles", "warriors dagster-storage"]
    assert {step.split()[1] for step in steps} <= commands
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1


def test_network_policies_admit_only_the_ingress_controller_and_prometheus() -> None:
    policies = [r for r in _resources() if r["kind"] == "NetworkPolicy"]
    # A policy with no ingress rule over every pod of the platform: nothing reaches them
    # unless another policy says so.
    deny = [p for p in policies if "ingress" not in p["spec"] and p["spec"]["policyTypes"] == ["Ingress"]]
    assert [p["spec"]["podSelector"] for p in deny] == [
        {"matchLabels": {"app.kubernetes.io/part-of": "warriors"}}
    ]
    api_labels = _named("Deployment", "warriors-api")["spec"]["template"]["metadata"]["labels"]
    allowing = [p for p in policies if p["spec"].get("ingress")]
    api_policies = [
        p for p in allowing if p["spec"]["podSelector"].get("matchLabels", {}).items() <= api_labels.items()
        and p["spec"]["podSelector"].get("matchLabels")
    ]  # fmt: skip
    assert len(api_policies) == 1
    for rule in api_policies[0]["spec"]["ingress"]:
        assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
        assert rule["from"], "an ingress rule open to everyone"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            assert set(peer) == {"namespaceSelector"}
    for policy in allowing:
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule open to everyone"


# Dagster's chart ---------------------------------------------------------------------------


def _values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(DAGSTER_VALUES.read_text())
    return values


def test_dagster_values_run_the_platforms_dagster_image_with_the_k8s_run_launcher() -> None:
    values = _values()
    (image,) = yaml.safe_load(KUSTOMIZATION.read_text())["images"]
    registry = image["name"].rsplit("/", 1)[0]
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"] is True
    # The Dockerfile's `dagster` target, pushed next to the platform's image, same tag.
    for section in (deployment, values["dagsterWebserver"], values["dagsterDaemon"]):
        assert section["image"] == {
            "repository": f"{registry}/dagster",
            "tag": image["newTag"],
            "pullPolicy": "IfNotPresent",
        }
        assert section["podSecurityContext"]["runAsNonRoot"] is True
        assert section["podSecurityContext"]["runAsUser"] == USER_ID
        assert section["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert section["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(section["resources"]["limits"])
    assert "AS dagster" in (ROOT / "Dockerfile").read_text()
    # The same definitions as `make run`'s workspace.
    args = deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    assert module == workspace["load_from"][0]["python_module"]["module_name"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runMonitoring"]["enabled"] is True
    # The queue of `make run`'s instance.
    root = yaml.safe_load((ROOT / "dagster.yaml").read_text())["run_coordinator"]["config"]
    queued = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert queued["maxConcurrentRuns"] == root["max_concurrent_runs"]
    assert queued["tagConcurrencyLimits"] == root["tag_concurrency_limits"]
    # No password here: the operator's Secrets.
    assert values["generatePostgresqlPasswordSecret"] is False
    assert "postgresqlPassword" not in values["postgresql"]
    assert values["postgresql"]["enabled"] is False
    for variable in deployment["env"]:
        if "valueFrom" in variable:
            assert variable["valueFrom"]["secretKeyRef"]["name"] == SECRET
        else:
            assert not SECRET_NAME.search(variable["name"]), variable["name"]
    assert deployment["envConfigMaps"] == [{"name": CONFIG_MAP}]
    # Every image the chart will run is pinned.
    for section in (values["postgresql"], values["busybox"]):
        assert section["image"]["tag"] not in ("", "latest", None)
    # The chart's version is Dagster's, the one pyproject.toml pins.
    dagster = re.search(r'"dagster==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert dagster, "pyproject.toml pins no dagster"
    assert f"--version {dagster[1]}" in DAGSTER_VALUES.read_text()
    assert f"--version {dagster[1]}" in DEPLOYMENT_DOC.read_text()
    assert values["telemetry"] == {"enabled": False}


def test_dagster_values_kubernetes_parts_are_valid() -> None:
    """The chart copies these fragments into its pods as they are: each is validated as
    part of a Pod, strictly."""
    values = _values()
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    sections = {
        "webserver": values["dagsterWebserver"],
        "daemon": values["dagsterDaemon"],
        "user-code": deployment,
    }
    for name, section in sections.items():
        container: dict[str, Any] = {
            "name": name,
            "image": f"{section['image']['repository']}:{section['image']['tag']}",
            "securityContext": section["securityContext"],
            "resources": section["resources"],
            "ports": [{"name": "http", "containerPort": 3000}],
        }
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in section:
                container[probe] = {k: v for k, v in section[probe].items() if k != "enabled"}
        if "env" in section:
            container["env"] = section["env"]
        if "volumeMounts" in section:
            container["volumeMounts"] = section["volumeMounts"]
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {
                "securityContext": section["podSecurityContext"],
                "containers": [container],
                "volumes": section.get("volumes", []),
            },
        }
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(pod, version, strict=True)

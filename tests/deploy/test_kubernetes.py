"""The Kubernetes manifests, rendered by the real kustomize and checked by a strict schema (deploy/README.md).

- `kubectl kustomize deploy/kubernetes` renders, and every object it renders, and every Secret template, passes
  `kubernetes-validate` in strict mode (unknown fields refused) for each pinned Kubernetes version;
- what no schema says, checked across the objects: probes, resources and securityContext of every container; every
  ConfigMap, Secret and Secret key (a mounted file) that a pod refers to exists in the manifests or templates;
  every `PAYGATE_*` name is a setting and each container's environment makes valid settings; images, command lines
  (parsed by the real `paygate` parser), probes (by the health-check script's parser), uid and ports match the
  Dockerfile; Services, the HPA and the PodDisruptionBudgets find their pods;
- the ServiceMonitor, a CRD whose schema is not available here: its selector and port reach the metrics ports.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from runtime.settings import Settings
from stack.cli import build_parser
from tests.deploy.deploy_support import (
    DEPLOY_DIR,
    HEALTHCHECK_COMMAND,
    healthcheck_module,
    image_exposed_ports,
    image_user_id,
    tool,
)

KUBERNETES_DIR = DEPLOY_DIR / "kubernetes"
# The oldest release deploy/README.md supports (CronJob timeZone, Job podFailurePolicy), and two later ones.
PINNED_VERSIONS = ("1.27.0", "1.30.0", "1.34.0")
TEMPLATES = ("secret.template.yaml", "channels-secret.template.yaml", "tls-secrets.template.yaml")
IMAGE = "registry.example.com/paygate"
WORKLOAD_KINDS = ("Deployment", "Job", "CronJob")

Object = dict[str, Any]


@pytest.fixture(scope="module")
def rendered() -> list[Object]:
    kubectl = tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(KUBERNETES_DIR)], capture_output=True, text=True, check=False, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


@pytest.fixture(scope="module")
def templates() -> list[Object]:
    return [obj for name in TEMPLATES for obj in yaml.safe_load_all((KUBERNETES_DIR / name).read_text()) if obj]


def _pod_spec(obj: Object) -> Object:
    spec = obj["spec"]["jobTemplate"]["spec"] if obj["kind"] == "CronJob" else obj["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def _containers(objects: list[Object]) -> Iterator[tuple[Object, Object, Object]]:
    """(workload, pod spec, container) for every container of every workload."""
    for obj in objects:
        if obj["kind"] in WORKLOAD_KINDS:
            pod = _pod_spec(obj)
            for container in pod["containers"]:
                yield obj, pod, container


def _named(objects: list[Object], kind: str) -> dict[str, Object]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def test_kustomize_renders_every_piece_into_the_namespace(rendered: list[Object]) -> None:
    kinds = {obj["kind"] for obj in rendered}
    assert {"Namespace", "ConfigMap", "Deployment", "Service", "Job", "CronJob", "NetworkPolicy"} <= kinds
    assert set(_named(rendered, "Deployment")) == {"paygate-gateway", "paygate-worker", "paygate-notify-edge"}
    namespaced = [obj for obj in rendered if obj["kind"] != "Namespace"]
    assert {obj["metadata"].get("namespace") for obj in namespaced} == {"paygate"}
    assert all(obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "paygate" for obj in rendered)


def _as_schema_of(obj: Object, version: str) -> Object:
    """The 1.27 and 1.28 schemas mark a podFailurePolicy rule's onPodConditions as required (its Go field lacks
    omitempty), although the API server treats an absent list as an empty one (`len(rule.OnPodConditions) == 0`)
    and Kubernetes' own example omits it; give those versions the empty list they insist on, and nothing else."""
    if obj["kind"] != "CronJob" or tuple(map(int, version.split(".")[:2])) >= (1, 29):
        return obj
    patched = copy.deepcopy(obj)
    for rule in patched["spec"]["jobTemplate"]["spec"].get("podFailurePolicy", {}).get("rules", []):
        rule.setdefault("onPodConditions", [])
    return patched


@pytest.mark.parametrize("version", PINNED_VERSIONS)
def test_every_object_passes_the_strict_schema(rendered: list[Object], templates: list[Object], version: str) -> None:
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    if version.rsplit(".", 1)[0] not in {v.rsplit(".", 1)[0] for v in validator.utils.all_versions()}:
        pytest.skip(f"this kubernetes-validate ships no schema for Kubernetes {version}")
    failures = []
    for obj in [*rendered, *templates]:
        try:
            validator.validate(_as_schema_of(obj, version), version, strict=True)
        except validator.ValidationError as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message}")
    assert failures == []


def test_the_strict_schema_refuses_a_misspelt_field(rendered: list[Object]) -> None:
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    gateway = copy.deepcopy(_named(rendered, "Deployment")["paygate-gateway"])
    container = _pod_spec(gateway)["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(validator.ValidationError, match="readinesProbe"):
        validator.validate(gateway, PINNED_VERSIONS[-1], strict=True)


def test_containers_have_probes_resources_and_a_locked_down_context(rendered: list[Object]) -> None:
    uid = image_user_id()
    for workload, pod, container in _containers(rendered):
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        if workload["kind"] == "Deployment":
            assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(container), where
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) == {"cpu", "memory"}, where
        assert pod["automountServiceAccountToken"] is False, where
        context = pod["securityContext"]
        assert (context["runAsNonRoot"], context["runAsUser"], context["runAsGroup"]) == (True, uid, uid), where
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        }, where
        # A read-only root: the only writable places are the emptyDir volumes at /data and /tmp.
        volumes = {v["name"]: v for v in pod["volumes"]}
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert writable == {"/data", "/tmp"}, where
        assert all("emptyDir" in volumes[m["name"]] for m in container["volumeMounts"] if not m.get("readOnly"))


def _probe_commands(container: Object) -> Iterator[list[str]]:
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container.get(name, {}).get("exec", {}).get("command")
        if command:
            yield command


def test_probes_name_real_ports_and_run_the_images_health_check(rendered: list[Object]) -> None:
    parser = healthcheck_module().build_parser()
    for workload, _, container in _containers(rendered):
        port_names = {port["name"] for port in container.get("ports", [])}
        for name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container.get(name, {})
            for handler in ("tcpSocket", "httpGet"):
                if handler in probe:
                    assert probe[handler]["port"] in port_names, (workload["metadata"]["name"], name)
        for command in _probe_commands(container):
            assert command[0] == HEALTHCHECK_COMMAND, command
            args = parser.parse_args(command[1:])
            assert args.ca, "probes speak TLS: production mode serves nothing else"
            host, port = args.address.rsplit(":", 1)
            assert (host, int(port)) in {("127.0.0.1", p["containerPort"]) for p in container["ports"]}, command


def _mounted_files(pod: Object, container: Object, secrets: dict[str, Object]) -> dict[str, set[str]]:
    """Mount path -> the file names the mounted Secret provides (its keys)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted: dict[str, set[str]] = {}
    for mount in container["volumeMounts"]:
        secret = volumes[mount["name"]].get("secret")
        if secret is not None:
            assert secret["secretName"] in secrets, f"no template for Secret {secret['secretName']}"
            mounted[mount["mountPath"]] = set(secrets[secret["secretName"]]["stringData"])
    return mounted


def _paths_in(container: Object) -> Iterator[str]:
    """Every absolute file path a container's environment or probes name."""
    for entry in container.get("env", []):
        if str(entry.get("value", "")).startswith("/"):
            yield entry["value"]
    for command in _probe_commands(container):
        for argument in command:
            if argument.startswith("--") and "=/" in argument:
                yield argument.split("=", 1)[1]


def test_every_referenced_config_map_secret_and_file_exists(rendered: list[Object], templates: list[Object]) -> None:
    config_maps = _named(rendered, "ConfigMap")
    secrets = _named(templates, "Secret")
    for workload, pod, container in _containers(rendered):
        where = f"{workload['metadata']['name']}/{container['name']}"
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps, where
            if "secretRef" in source:
                assert source["secretRef"]["name"] in secrets, where
        mounted = _mounted_files(pod, container, secrets)
        for path in _paths_in(container):
            directory, _, file_name = path.rpartition("/")
            if directory in mounted:
                assert file_name in mounted[directory], f"{where}: {path} is not a key of the mounted Secret"
    # channels.json names its key files by their mounted path: each must be a key of the same Secret.
    channels = secrets["paygate-channels"]["stringData"]
    named = re.findall(r'"(/etc/paygate/channels/[^"]+)"', channels["channels.json"])
    assert named
    assert {path.rsplit("/", 1)[1] for path in named} <= set(channels)
    json.loads(channels["channels.json"])


def _environment(container: Object, config_maps: dict[str, Object], secrets: dict[str, Object]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        if "secretRef" in source:
            env.update(secrets[source["secretRef"]["name"]]["stringData"])
    env.update({e["name"]: str(e.get("value", "")) for e in container.get("env", [])})
    return env


def test_every_setting_name_is_real_and_each_container_has_valid_settings(
    rendered: list[Object], templates: list[Object]
) -> None:
    settings = {f"PAYGATE_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    config_maps, secrets = _named(rendered, "ConfigMap"), _named(templates, "Secret")
    assert set(config_maps["paygate-config"]["data"]) <= settings
    assert set(secrets["paygate-secrets"]["stringData"]) <= settings
    for _, _, container in _containers(rendered):
        env = _environment(container, config_maps, secrets)
        assert {name for name in env if name.startswith("PAYGATE_")} <= settings, container["name"]
        chosen = Settings.from_env(env)  # production mode: raises on anything unsafe or malformed
        assert chosen.mode == "production"


def _command_line(container: Object) -> list[str]:
    """What the container runs, as arguments of `paygate` (the image's ENTRYPOINT)."""
    if "command" not in container:
        return [str(a).replace("$(POD_NAME)", "paygate-worker-0") for a in container["args"]]
    # The reconcile jobs: a shell computes "yesterday", then `exec paygate reconcile ...`.
    assert container["command"] == ["/bin/sh", "-c"], container["command"]
    script = container["args"][0]
    match = re.search(r'exec paygate (reconcile --channel "\$RECONCILE_CHANNEL" --date "\$day")$', script)
    assert match, script
    channel = next(e["value"] for e in container["env"] if e["name"] == "RECONCILE_CHANNEL")
    return ["reconcile", "--channel", channel, "--date", "2026-11-27"]


def test_images_commands_uid_and_ports_match_the_dockerfile(rendered: list[Object]) -> None:
    parser, exposed = build_parser(), image_exposed_ports()
    commands = set()
    for workload, _, container in _containers(rendered):
        assert container["image"].rsplit(":", 1)[0] == IMAGE, container["image"]
        args = parser.parse_args(_command_line(container))  # argparse exits (SystemExit) on a wrong flag
        commands.add(args.command)
        assert {p["containerPort"] for p in container.get("ports", [])} <= exposed, workload["metadata"]["name"]
    assert commands == {"gateway", "worker", "notify-edge", "db", "reconcile"}


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_services_autoscaler_and_budgets_find_their_pods(rendered: list[Object]) -> None:
    pods = [(obj, obj["spec"]["template"]) for obj in rendered if obj["kind"] == "Deployment"]
    for service in _named(rendered, "Service").values():
        chosen = [(d, t) for d, t in pods if _selects(service["spec"]["selector"], t["metadata"]["labels"])]
        assert len(chosen) == 1, service["metadata"]["name"]
        container_ports = {p["name"] for p in chosen[0][1]["spec"]["containers"][0]["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports, service["metadata"]["name"]
    for budget in _named(rendered, "PodDisruptionBudget").values():
        selector = budget["spec"]["selector"]["matchLabels"]
        assert sum(_selects(selector, t["metadata"]["labels"]) for _, t in pods) == 1, budget["metadata"]["name"]
    for autoscaler in _named(rendered, "HorizontalPodAutoscaler").values():
        assert autoscaler["spec"]["scaleTargetRef"]["name"] in _named(rendered, "Deployment")


def test_the_service_monitor_reaches_the_metrics_ports(rendered: list[Object]) -> None:
    """No schema for monitoring.coreos.com/v1 ships with kubernetes-validate (a CRD of the Prometheus Operator), so
    only its shape and its references are checked: it selects the Services that carry a `metrics` port, whose names
    become the `job` labels the alert rules expect (paygate-gateway, paygate-workers)."""
    monitor = yaml.safe_load((KUBERNETES_DIR / "servicemonitor.yaml").read_text())
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor")
    validator = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is in the dev extra")
    with pytest.raises(validator.SchemaNotFoundError):
        validator.validate(monitor, PINNED_VERSIONS[-1], strict=True)
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [s for s in _named(rendered, "Service").values() if _selects(selector, s["metadata"]["labels"])]
    [endpoint] = monitor["spec"]["endpoints"]
    with_metrics = {
        s["metadata"]["name"] for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
    }
    assert with_metrics == {"paygate-gateway", "paygate-workers"}
    # The Operator names a job after its Service: the same job labels as the Compose scrape configuration's.
    scrape = yaml.safe_load((DEPLOY_DIR / "prometheus" / "prometheus.yml").read_text())
    assert with_metrics <= {job["job_name"] for job in scrape["scrape_configs"]}

"""The Kubernetes manifests under deploy/: rendered with `kubectl kustomize`,
validated offline against the Kubernetes API schemas (the pinned
`kubernetes-validate` package), checked for what Flyte and an operator rely
on, and the rendered container's command line and environment run against
the real binary with the plugin folder its init container assembles.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any, Dict, List

import grpc
import kubernetes_validate
import pytest
import yaml
from conftest import COMPONENTS_DIR, REPO_ROOT, RPC_TIMEOUT_S, SERVER_BIN, free_ports, tail
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

BASE = REPO_ROOT / "deploy" / "base"
OVERLAYS = [BASE, REPO_ROOT / "deploy" / "examples" / "extra-connectors"]
#: The call deadline the server applies by default (--call-timeout).
CALL_TIMEOUT_S = 60


def render(folder: Path) -> List[Dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/ (the Debian package kubectl)"
    rendered = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True)
    assert rendered.returncode == 0, rendered.stderr
    return [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]


def one(docs: List[Dict[str, Any]], kind: str, name: str) -> Dict[str, Any]:
    """The object of `kind` named `name` (a generated ConfigMap's name carries a hash suffix)."""

    def named(doc: Dict[str, Any]) -> bool:
        actual = doc["metadata"]["name"]
        return actual == name or (kind == "ConfigMap" and actual.startswith(f"{name}-"))

    found = [d for d in docs if d["kind"] == kind and named(d)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def docs() -> List[Dict[str, Any]]:
    return render(BASE)


def container(deployment: Dict[str, Any]) -> Dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["flyteconnector"]
    return containers[0]


@pytest.mark.parametrize("folder", OVERLAYS, ids=lambda f: f.relative_to(REPO_ROOT).as_posix())
def test_every_rendered_object_is_valid_kubernetes(folder: Path):
    version = kubernetes_validate.latest_version()
    for doc in render(folder):
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']} is not valid Kubernetes {version}: {error}")


def test_the_validator_refuses_what_kubernetes_would():
    # So the check above can fail: a typo'd field and a wrong type.
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}, "spec": {"prots": []}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(service, kubernetes_validate.latest_version(), strict=True)


def test_the_service_is_the_one_flytes_chart_makes(docs):
    service = one(docs, "Service", "flyteconnector")
    assert service["metadata"]["name"] == "flyteconnector"
    assert service["spec"]["ports"] == [
        {"name": "connector-grpc", "port": 8000, "targetPort": "connector-grpc", "protocol": "TCP"}
    ]
    headless = one(docs, "Service", "flyteconnector-headless")
    assert headless["spec"]["clusterIP"] == "None"
    deployment = one(docs, "Deployment", "flyteconnector")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for svc in (service, headless):
        assert svc["spec"]["selector"].items() <= pod_labels.items()
    ports = {p["name"]: p["containerPort"] for p in container(deployment)["ports"]}
    assert ports == {"connector-grpc": 8000, "metrics": 9090}


def test_the_pods_are_probed_scraped_drained_and_unprivileged(docs):
    deployment = one(docs, "Deployment", "flyteconnector")
    pod = deployment["spec"]["template"]
    main = container(deployment)
    assert main["readinessProbe"]["grpc"]["port"] == 8000
    assert main["livenessProbe"]["grpc"]["port"] == 8000
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9090"
    pre_stop = main["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["spec"]["terminationGracePeriodSeconds"] > CALL_TIMEOUT_S + pre_stop
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert main["resources"]["requests"]["cpu"], "the HPA needs a CPU request"


def test_the_autoscaler_and_disruption_budget_target_these_pods(docs):
    deployment = one(docs, "Deployment", "flyteconnector")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    hpa = one(docs, "HorizontalPodAutoscaler", "flyteconnector")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "flyteconnector"}
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = one(docs, "PodDisruptionBudget", "flyteconnector")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert hpa["spec"]["minReplicas"] >= 2, "one pod may be disrupted while another serves"


def test_the_plugin_manifests_are_the_connectors_own(docs):
    configmap = one(docs, "ConfigMap", "flyteconnector-plugins")
    for name, text in configmap["data"].items():
        stem = name.removesuffix(".toml")
        source = REPO_ROOT / "example-connectors" / stem / name
        assert text == source.read_text(), f"deploy/base/plugins/{name} differs from {source.relative_to(REPO_ROOT)}"
    deployment = one(docs, "Deployment", "flyteconnector")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["manifests"]["configMap"]["name"] == configmap["metadata"]["name"]
    secret = volumes["flyteconnector-secret"]["secret"]
    assert secret == {"secretName": "flyteconnector", "optional": True}
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert mounts["flyteconnector-secret"] == "/etc/secrets"
    # Each connector's connection secrets come from the mounted Secret, the
    # file named after the connection key, where a task's connection lacks them.
    expected_keys = {
        "databricks.toml": {"databricks_token"},
        "databricks-py.toml": {"databricks_token"},
        "bigquery.toml": {"google_application_credentials"},
        "snowflake.toml": {"snowflake_private_key", "snowflake_private_key_passphrase"},
        "slurm.toml": {"ssh_private_key"},
    }
    for name, text in configmap["data"].items():
        credentials = tomllib.loads(text)["credentials"]
        assert set(credentials) == expected_keys[name], name
        for key, source in credentials.items():
            assert source == {"file": f"{mounts['flyteconnector-secret']}/{key}"}, (name, key)


def test_the_rendered_container_serves_the_plugin_folder_its_init_container_assembles(docs, tmp_path):
    """The Deployment's own command line and environment, run by the real
    binary: the init container's copy (the image's connectors plus the
    ConfigMap's manifests) in the plugin folder, the cache volume, then a
    probe's health check and ListConnectors."""
    deployment = one(docs, "Deployment", "flyteconnector")
    configmap = one(docs, "ConfigMap", "flyteconnector-plugins")
    main = container(deployment)
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    env = {e["name"]: e["value"] for e in main["env"]}

    # Paths of the pod, under tmp_path.
    def local(path: str) -> Path:
        return tmp_path / path.lstrip("/")

    plugins = local(mounts["plugins"])
    plugins.mkdir(parents=True)
    for wasm in ("databricks.wasm", "snowflake.wasm", "echo.wasm"):
        shutil.copy(COMPONENTS_DIR / wasm, plugins / wasm)
    for name, text in configmap["data"].items():
        (plugins / name).write_text(text)
    assert env["FLYTE_CONNECTOR_PATH"] == mounts["plugins"]
    assert mounts["compile-cache"] == f"{env['XDG_CACHE_HOME']}/flyte-connect"

    grpc_port, metrics_port = free_ports(2)
    args = [
        {"8000": str(grpc_port), "9090": str(metrics_port)}.get(arg, arg) for arg in main["args"]
    ]
    assert args[0] == "c0"
    process_env = {
        "PATH": "/usr/bin:/bin",
        **env,
        "FLYTE_CONNECTOR_PATH": str(plugins),
        "XDG_CACHE_HOME": str(local(env["XDG_CACHE_HOME"])),
    }
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([str(SERVER_BIN), *args], env=process_env, stdout=out, stderr=subprocess.STDOUT)
    try:
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        grpc.channel_ready_future(channel).result(timeout=60)
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        listed = service_pb2_grpc.ConnectorMetadataServiceStub(channel).ListConnectors(
            connector_pb2.ListConnectorsRequest(), timeout=RPC_TIMEOUT_S
        )
        assert sorted(c.name for c in listed.connectors) == [
            "Databricks Connector",
            "Echo Connector",
            "Snowflake Connector",
        ], tail(log.read_text())
        assert any(local(env["XDG_CACHE_HOME"]).joinpath("flyte-connect").iterdir()), "the compile cache is filled"
        channel.close()
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, tail(log.read_text())
    # What the pod writes is what a log pipeline parses: one JSON object
    # per line, the connectors among them.
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r.get("connector") for r in records if r["message"] == "serving"} == {
        "Databricks Connector",
        "Echo Connector",
        "Snowflake Connector",
    }


def test_the_image_runs_flytes_command_as_a_non_root_user():
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    lines = [line.strip() for line in dockerfile.splitlines()]
    assert 'ENTRYPOINT ["flyte-connect"]' in lines
    assert 'CMD ["c0"]' in lines
    assert "RUN ln -s flyte-connect /usr/local/bin/c0" in lines, "a chart whose command is c0 runs it"
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and not users[-1].startswith(("0", "root")), users
    assert "VOLUME /var/cache/flyte-connect" in lines

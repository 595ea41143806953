"""The Slurm connector served by flyte-connect, driven by the published
flyteidl2 client with TaskTemplates made by flyteplugins-slurm's own task
plugin, against a real one-node Slurm cluster behind a real OpenSSH server on
loopback (tests/cluster).

The scripts it submits are compared with what flyteplugins-slurm's own
connector renders for the same template and execution, and a resource meta
the Python connector writes is polled and cancelled here, so tasks move
between the two servers.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import flyte
import pytest
from flyte.io import Dir, File
from flyteidl2.connector import connector_pb2
from flyteidl2.core import execution_pb2, identifier_pb2, security_pb2
from flyteplugins.slurm import Slurm, SlurmScriptTask
from flyteplugins.slurm.connector import SlurmConnector, SlurmJobMetadata

from conftest import RPC_TIMEOUT_S, HostedConnector, flyte_inputs, hosted_connector, phase_name, plugin_template

CLUSTER_SCRIPT = Path(__file__).resolve().parent.parent / "cluster" / "cluster.py"
OUTPUT_PREFIX = "s3://bucket/outputs/run-1/a0"

train_env = flyte.TaskEnvironment(
    name="slurm-train",
    image="ghcr.io/org/img:tag",
    plugin_config=Slurm(
        partition="debug",
        nodes=1,
        time_limit="5:00",
        sbatch_options={"exclusive": True},
        container_runtime="apptainer",
        container_mounts=["/data:/data"],
        modules=["cuda/12.2"],
        env={"FROM_TASK": "it's set"},
        ssh_private_key="slurm-key",
        known_hosts_secret="slurm-hosts",
    ),
)


@train_env.task
async def train(steps: int) -> float:
    return float(steps)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Dict[str, Any]]:
    """The cluster `make test` started (FLYTE_CONNECT_TEST_CLUSTER), or one of
    this module's own."""
    shared = os.environ.get("FLYTE_CONNECT_TEST_CLUSTER")
    if shared:
        yield json.loads((Path(shared) / "cluster.json").read_text())
        return
    # Under /tmp itself: munged runs as its own user, which must reach the folder.
    folder = Path(f"/tmp/flyte-connect-cluster-py-{os.getpid()}")
    subprocess.run(["python3", str(CLUSTER_SCRIPT), "up", str(folder)], check=True)
    try:
        yield json.loads((folder / "cluster.json").read_text())
    finally:
        subprocess.run(["python3", str(CLUSTER_SCRIPT), "down", str(folder)], check=True)


@pytest.fixture(scope="module")
def slurm(cluster: Dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostedConnector]:
    manifest = f'[ssh]\nallowed_hosts = ["{cluster["host"]}:{cluster["ssh_port"]}"]\n'
    with hosted_connector("slurm", manifest, "", tmp_path_factory) as hosted:
        yield hosted
        log = hosted.server.log()
    key_line = cluster["private_key"].splitlines()[2]
    assert key_line not in log, "the private key reached the server's log"


def secrets(cluster: Dict[str, Any]) -> security_pb2.Connection:
    return security_pb2.Connection(
        secrets={"ssh_private_key": cluster["private_key"], "known_hosts_data": cluster["known_hosts"]}
    )


def execution() -> connector_pb2.TaskExecutionMetadata:
    return connector_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(
                    project="proj", domain="development", name="rabc", org="myorg"
                )
            ),
            retry_attempt=1,
        ),
        environment_variables={"ACTION_NAME": "a0", "_U_RUN_BASE": "s3://bucket/run"},
    )


def with_cluster(task_template, cluster: Dict[str, Any], working_dir: str):
    """The template, pointed at the cluster and `working_dir` as a task's
    Slurm config would point it."""
    custom = task_template.custom
    custom["connection"].update({"host": cluster["host"], "username": cluster["user"], "port": cluster["ssh_port"]})
    custom["working_dir"] = working_dir
    return task_template


class Recorder:
    """Stands in for flyteplugins-slurm's SSH transport: records the script."""

    def __init__(self) -> None:
        self.script = ""

    async def home(self) -> str:
        raise AssertionError("an absolute working_dir needs no home")

    async def submit(self, script: str, script_path: str) -> str:
        self.script = script
        return "1"


def python_script(task_template, inputs: Dict[str, Any]) -> tuple[str, str]:
    """The script flyteplugins-slurm's connector renders, and its job name."""
    recorder = Recorder()
    connector = SlurmConnector()
    connector._transport = lambda *args, **kwargs: recorder
    meta = asyncio.run(
        connector.create(
            task_template,
            OUTPUT_PREFIX,
            inputs=inputs,
            task_execution_metadata=execution(),
            ssh_private_key="unused",
        )
    )
    return recorder.script, meta.job_name


def create(slurm: HostedConnector, cluster, task_template, inputs=None) -> bytes:
    request = connector_pb2.CreateTaskRequest(
        template=task_template,
        output_prefix=OUTPUT_PREFIX,
        task_execution_metadata=execution(),
        connection=secrets(cluster),
    )
    if inputs is not None:
        request.inputs.CopyFrom(inputs)
    return slurm.stub.CreateTask(request, timeout=RPC_TIMEOUT_S).resource_meta


def get(slurm: HostedConnector, cluster, meta: bytes, task_type: str = "slurm") -> connector_pb2.Resource:
    request = connector_pb2.GetTaskRequest(
        task_category=connector_pb2.TaskCategory(name=task_type), resource_meta=meta, connection=secrets(cluster)
    )
    return slurm.stub.GetTask(request, timeout=RPC_TIMEOUT_S).resource


def delete(slurm: HostedConnector, cluster, meta: bytes) -> None:
    request = connector_pb2.DeleteTaskRequest(
        task_category=connector_pb2.TaskCategory(name="slurm"), resource_meta=meta, connection=secrets(cluster)
    )
    slurm.stub.DeleteTask(request, timeout=RPC_TIMEOUT_S)


def ours(meta: bytes) -> tuple[str, str]:
    """The script flyte-connect submitted, and its job name."""
    fields = json.loads(meta)
    path = Path(fields["stdout_path"]).with_suffix(".sbatch")
    return path.read_text(), fields["job_name"]


def test_a_container_task_gets_the_python_connectors_script(slurm, cluster, tmp_path):
    working_dir = f"{cluster['jobs_dir']}/py-container-{os.getpid()}"
    template = with_cluster(plugin_template(train), cluster, working_dir)
    assert template.type == "slurm"
    meta = create(slurm, cluster, template)
    try:
        script, job_name = ours(meta)
        expected, python_job_name = python_script(template, {})
        assert script == expected.replace(python_job_name, job_name)
        assert "apptainer exec --bind /data:/data docker://ghcr.io/org/img:tag bash -c" in script
    finally:
        delete(slurm, cluster, meta)


def test_a_script_task_gets_the_python_connectors_script_and_succeeds(slurm, cluster):
    working_dir = f"{cluster['jobs_dir']}/py-script-{os.getpid()}"
    task = SlurmScriptTask(
        name="legacy_train",
        script='#!/bin/bash\n#SBATCH --comment=hoisted\n\n# a comment\necho "epochs=$FLYTE_INPUT_EPOCHS lr=$FLYTE_INPUT_LR"\n',
        plugin_config=Slurm(partition="debug", modules=[], ssh_private_key="k", known_hosts_secret="kh"),
        inputs={"epochs": int, "lr": float, "data": File},
    )
    flyte.TaskEnvironment.from_task("legacy", task)
    template = with_cluster(plugin_template(task), cluster, working_dir)
    assert template.type == "slurm_script"
    data = File.from_existing_remote("s3://bucket/data.csv")
    inputs = flyte_inputs(task, epochs=3, lr=0.001, data=data)
    meta = create(slurm, cluster, template, inputs.proto_inputs)
    script, job_name = ours(meta)
    expected, python_job_name = python_script(template, {"epochs": 3, "lr": 0.001, "data": data})
    assert script == expected.replace(python_job_name, job_name)

    deadline = time.monotonic() + 120
    while True:
        resource = get(slurm, cluster, meta, "slurm_script")
        if phase_name(resource) in ("SUCCEEDED", "FAILED", "ABORTED"):
            break
        assert time.monotonic() < deadline, resource.message
        time.sleep(0.5)
    assert phase_name(resource) == "SUCCEEDED", resource.message
    stdout = Path(json.loads(meta)["stdout_path"]).read_text()
    assert stdout == "epochs=3 lr=0.001\n"


def test_metas_are_the_python_connectors_both_ways(slurm, cluster):
    working_dir = f"{cluster['jobs_dir']}/py-meta-{os.getpid()}"
    task = SlurmScriptTask(name="sleeper", script="sleep 300\n", plugin_config=Slurm(partition="debug"))
    flyte.TaskEnvironment.from_task("sleepers", task)
    template = with_cluster(plugin_template(task), cluster, working_dir)
    meta = create(slurm, cluster, template)
    # Byte for byte what the Python connector's encode() writes.
    fields = json.loads(meta)
    assert SlurmJobMetadata(**fields).encode() == meta
    # A meta the Python connector wrote (its own field values) is polled and
    # cancelled here.
    theirs = SlurmJobMetadata(
        job_id=fields["job_id"],
        job_name=fields["job_name"],
        host=cluster["host"],
        username=cluster["user"],
        port=cluster["ssh_port"],
        stdout_path=fields["stdout_path"],
        stderr_path=fields["stderr_path"],
    ).encode()
    resource = get(slurm, cluster, theirs, "slurm_script")
    assert phase_name(resource) in ("QUEUED", "RUNNING"), resource.message
    assert resource.message.startswith(f"Slurm job {fields['job_id']} is ")
    delete(slurm, cluster, theirs)
    deadline = time.monotonic() + 60
    while phase_name(resource) != "ABORTED":
        assert time.monotonic() < deadline, resource.message
        time.sleep(0.5)
        resource = get(slurm, cluster, meta, "slurm_script")


def test_declared_outputs_get_the_python_connectors_script_and_meta(slurm, cluster):
    working_dir = f"{cluster['jobs_dir']}/py-outputs-{os.getpid()}"
    task = SlurmScriptTask(
        name="produces",
        script='#!/bin/bash\n#SBATCH --time=1:00\necho m > "$FLYTE_OUTPUT_MODEL"\nmkdir -p "$FLYTE_OUTPUT_SHARDS"\n',
        plugin_config=Slurm(partition="debug"),
        outputs={"model": File, "shards": Dir},
        output_upload="connector",
    )
    flyte.TaskEnvironment.from_task("producers", task)
    template = with_cluster(plugin_template(task), cluster, working_dir)
    meta = create(slurm, cluster, template)
    try:
        script, job_name = ours(meta)
        recorder = Recorder()
        connector = SlurmConnector()
        connector._transport = lambda *args, **kwargs: recorder
        theirs = asyncio.run(
            connector.create(
                template, OUTPUT_PREFIX, inputs={}, task_execution_metadata=execution(), ssh_private_key="unused"
            )
        )
        # The `mkdir` of the outputs folder goes before the user's script,
        # which then hoists none of its directives: as the Python connector does.
        assert script == recorder.script.replace(theirs.job_name, job_name)
        assert f"\nmkdir -p {working_dir}/{job_name}.outputs\n#!/bin/bash\n#SBATCH --time=1:00\n" in script
        expected = json.loads(theirs.encode().decode().replace(theirs.job_name, job_name))
        ours_meta = json.loads(meta)
        assert ours_meta["declared_outputs"] == expected["declared_outputs"]
        assert ours_meta["declared_outputs"]["model"] == {
            "uri": f"{OUTPUT_PREFIX}/model",
            "kind": "file",
            "upload": "connector",
            "written_to": f"{working_dir}/{job_name}.outputs/model",
        }
    finally:
        delete(slurm, cluster, meta)

"""The Databricks connectors served by flyte-connect (the Rust one and its
Python twin, each as the drop-in for task type `databricks`), driven by the
published flyteidl2 client with a TaskTemplate made by
flyteplugins-databricks' own task plugin, against the harness's fake
Databricks workspace.

Resource metas are compared with what the Python connector itself writes
(`DatabricksJobMetadata.encode()`), so tasks move between the two servers.
"""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Iterator, List

import flyte
import grpc
import pytest
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import execution_pb2, security_pb2, tasks_pb2
from flyteplugins.databricks import Databricks
from flyteplugins.databricks.connector import DatabricksJobMetadata

from conftest import RPC_TIMEOUT_S, fake_service, hosted_connector, plugin_template

TOKEN = "dapi-python-suite-token"
Phase = execution_pb2.TaskExecution.Phase


@pytest.fixture(scope="module")
def fake_databricks() -> Iterator[str]:
    """The fake workspace's base URL, http://127.0.0.1:PORT."""
    with fake_service("databricks", TOKEN) as base_url:
        yield base_url


@pytest.fixture(scope="module", params=["databricks", "databricks-py"])
def stub(
    request: pytest.FixtureRequest, fake_databricks: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[service_pb2_grpc.AsyncConnectorServiceStub]:
    # No FLYTE_CONNECTOR_TASK_TYPE for the Python one: it serves `databricks`.
    manifest = f'allowed_hosts = ["{fake_databricks}"]\n'
    with hosted_connector(request.param, manifest, fake_databricks, tmp_path_factory) as hosted:
        yield hosted.stub
        log = hosted.server.log()
    assert TOKEN not in log, "the token reached the server's log"


def databricks_template(instance: str, run_name: str) -> tasks_pb2.TaskTemplate:
    """The TaskTemplate flyteplugins-databricks makes for a Databricks task."""
    env = flyte.TaskEnvironment(
        name="databricks-" + run_name.replace(" ", "-"),
        image=flyte.Image.from_base("ghcr.io/flyteorg/databricks-task:v1"),
        plugin_config=Databricks(
            spark_conf={"spark.driver.memory": "1000M"},
            databricks_conf={
                "run_name": run_name,
                "new_cluster": {"spark_version": "13.3.x-scala2.12", "node_type_id": "m5.large", "num_workers": 2},
                "timeout_seconds": 3600,
            },
            databricks_instance=instance,
            databricks_token="databricks-token",
        ),
    )

    def double(x: int) -> int:
        return 2 * x

    return plugin_template(env.task(double))


def connection() -> security_pb2.Connection:
    return security_pb2.Connection(secrets={"databricks_token": TOKEN})


def category() -> connector_pb2.TaskCategory:
    return connector_pb2.TaskCategory(name="databricks", version=0)


def poll(stub, meta: bytes, times: int) -> List[connector_pb2.Resource]:
    return [
        stub.GetTask(
            connector_pb2.GetTaskRequest(task_category=category(), resource_meta=meta, connection=connection()),
            timeout=RPC_TIMEOUT_S,
        ).resource
        for _ in range(times)
    ]


def test_a_plugin_made_template_runs_to_success_with_the_python_connectors_meta(stub, fake_databricks):
    template = databricks_template(fake_databricks, "nightly")
    assert template.type == "databricks"
    created = stub.CreateTask(
        connector_pb2.CreateTaskRequest(template=template, output_prefix="s3://b/o", connection=connection()),
        timeout=RPC_TIMEOUT_S,
    )
    run_id = json.loads(created.resource_meta)["run_id"]
    # Byte for byte what the Python connector writes for the same run.
    expected = DatabricksJobMetadata(databricks_instance=fake_databricks, run_id=run_id).encode()
    assert created.resource_meta == expected
    # And the Python connector's own decoder reads ours.
    assert DatabricksJobMetadata.decode(created.resource_meta).run_id == run_id

    resources = poll(stub, created.resource_meta, 3)
    assert [r.phase for r in resources] == [Phase.INITIALIZING, Phase.RUNNING, Phase.SUCCEEDED]
    assert resources[0].log_links[0].name == "Databricks Console"
    assert resources[0].log_links[0].uri.endswith(f"/run/{run_id}")


def test_a_failed_run_fails_and_a_cancel_reaches_databricks(stub, fake_databricks):
    failing = stub.CreateTask(
        connector_pb2.CreateTaskRequest(
            template=databricks_template(fake_databricks, "fails"), connection=connection()
        ),
        timeout=RPC_TIMEOUT_S,
    )
    last = poll(stub, failing.resource_meta, 2)[-1]
    assert last.phase == Phase.FAILED
    assert "ZeroDivisionError" in last.message

    running = stub.CreateTask(
        connector_pb2.CreateTaskRequest(
            template=databricks_template(fake_databricks, "to cancel"), connection=connection()
        ),
        timeout=RPC_TIMEOUT_S,
    )
    stub.DeleteTask(
        connector_pb2.DeleteTaskRequest(
            task_category=category(), resource_meta=running.resource_meta, connection=connection()
        ),
        timeout=RPC_TIMEOUT_S,
    )
    assert poll(stub, running.resource_meta, 1)[0].phase == Phase.FAILED


def test_a_poll_answered_503_is_retried_and_a_workspace_that_never_recovers_is_unavailable(stub, fake_databricks):
    def created(run_name: str) -> bytes:
        return stub.CreateTask(
            connector_pb2.CreateTaskRequest(
                template=databricks_template(fake_databricks, run_name), connection=connection()
            ),
            timeout=RPC_TIMEOUT_S,
        ).resource_meta

    # The workspace answers the first poll 503: the connector repeats it
    # within the call, so Flyte's executor never counts a failed poll.
    flaky = created("flaky-poll")
    phases = [r.phase for r in poll(stub, flaky, 3)]
    assert phases == [Phase.INITIALIZING, Phase.RUNNING, Phase.SUCCEEDED]
    # A workspace that answers 503 to every poll: GetTask fails with
    # UNAVAILABLE inside the executor's deadline (10 s by default), naming
    # the call that failed, and the executor polls again. A RETRYABLE_FAILED
    # phase would end the attempt instead.
    request = connector_pb2.GetTaskRequest(
        task_category=category(), resource_meta=created("unavailable"), connection=connection()
    )
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTask(request, timeout=10)
    error = raised.value
    assert error.code() == grpc.StatusCode.UNAVAILABLE, f"{error.code()}: {error.details()}"
    assert time.monotonic() - started < 10
    assert error.details().startswith("failed to get databricks task with error:\n GET "), error.details()
    assert "/api/2.1/jobs/runs/get answered 503: " in error.details(), error.details()
    assert "TEMPORARILY_UNAVAILABLE" in error.details(), error.details()
    assert TOKEN not in error.details()


def test_a_task_started_by_the_python_connector_is_polled_by_ours(stub, fake_databricks):
    # A run submitted to the workspace by someone else (the Python server) ...
    request = urllib.request.Request(
        f"{fake_databricks}/api/2.1/jobs/runs/submit",
        data=json.dumps({"run_name": "started elsewhere"}).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=RPC_TIMEOUT_S) as answer:
        run_id = str(json.load(answer)["run_id"])
    # ... and the meta the Python connector stored for it.
    meta = DatabricksJobMetadata(databricks_instance=fake_databricks, run_id=run_id).encode()
    assert [r.phase for r in poll(stub, meta, 3)] == [Phase.INITIALIZING, Phase.RUNNING, Phase.SUCCEEDED]

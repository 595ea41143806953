"""Connectors written in Python (the SDK in guest-sdk/python, built with
componentize-py): faults in a Python guest fail only their own call, and a
connector's pure-Python dependencies are bundled into its component.

`faulty-py.wasm` (tests/components/faulty-py) misbehaves as its `fault`
input asks. It is served alone, with a manifest that caps each call at 3 s
and 64 MiB and allows no outbound host.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import grpc
import pytest
from conftest import (
    RPC_TIMEOUT_S,
    HostedConnector,
    SimpleType,
    assert_succeeded,
    category,
    create_request,
    expect_rpc_error,
    hosted_connector,
    output_literals,
    running_server,
    simple_type,
    str_literal,
)
from flyteidl2.connector import service_pb2_grpc
from flyteidl2.connector import connector_pb2

MANIFEST = """\
timeout_seconds = 3
memory_mb = 64
"""


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory):
    with hosted_connector("faulty-py", MANIFEST, "", tmp_path_factory) as hosted:
        yield hosted


def create(hosted: HostedConnector, fault: str, **extra: str) -> connector_pb2.CreateTaskResponse:
    variables = [
        (name, simple_type(SimpleType.STRING), str_literal(value), value)
        for name, value in {"fault": fault, **extra}.items()
    ]
    return hosted.stub.CreateTask(create_request("faulty_py", variables), timeout=RPC_TIMEOUT_S)


def assert_still_serving(hosted: HostedConnector) -> None:
    """The next call on the same connector works."""
    created = create(hosted, "none")
    assert json.loads(created.resource_meta) == {"fault": "none", "slept": 0.0}


def failure(operation: str, message: str) -> str:
    """The Python server's text for a connector's failure (flyte's `_handle_exception`)."""
    return f"failed to {operation} faulty_py task with error:\n {message}."


def test_an_exception_is_internal_with_its_traceback_last_line(faulty):
    err = expect_rpc_error(lambda: create(faulty, "raise"), grpc.StatusCode.INTERNAL)
    assert err.details() == failure("create", "KeyError: 'run_id'")
    # The whole traceback goes to the server's log, naming the connector's line.
    assert "in _lookup" in faulty.server.log()
    assert_still_serving(faulty)


def test_an_infinite_loop_is_stopped_at_the_deadline(faulty):
    expect_rpc_error(lambda: create(faulty, "loop"), grpc.StatusCode.DEADLINE_EXCEEDED)
    assert_still_serving(faulty)


def test_a_memory_bomb_is_stopped_at_the_cap(faulty):
    err = expect_rpc_error(lambda: create(faulty, "memory"), grpc.StatusCode.INTERNAL)
    assert err.details().startswith("failed to create faulty_py task with error:\n"), err.details()
    assert_still_serving(faulty)


def test_a_host_the_manifest_does_not_allow_is_denied(faulty):
    err = expect_rpc_error(
        lambda: create(faulty, "fetch", url="https://example.com/api?token=abc"), grpc.StatusCode.INTERNAL
    )
    assert err.details() == failure(
        "create",
        "outbound HTTP to example.com is denied by the host's policy: allow it in the connector's manifest "
        "(allowed_hosts)",
    )
    assert_still_serving(faulty)


def test_the_sdk_errors_map_to_their_codes(faulty):
    err = expect_rpc_error(lambda: create(faulty, "invalid"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "the template asks for something this connector cannot run" in err.details()
    err = expect_rpc_error(lambda: create(faulty, "retry"), grpc.StatusCode.UNAVAILABLE)
    assert "the service is busy, try again" in err.details()


def test_asyncio_timers_run_concurrently_on_the_sdk_loop(faulty):
    # Two 0.5 s sleeps under asyncio.gather take 0.5 s together, not 1 s;
    # then asyncio.wait_for stops a 60 s sleep after 0.05 s (else the call
    # fails, or runs into its 3 s deadline).
    created = create(faulty, "sleep", seconds="0.5")
    slept = json.loads(created.resource_meta)["slept"]
    assert 0.5 <= slept < 0.9, slept
    got = faulty.stub.GetTask(
        connector_pb2.GetTaskRequest(resource_meta=created.resource_meta, task_category=category("faulty_py")),
        timeout=RPC_TIMEOUT_S,
    )
    assert_succeeded(got.resource)
    assert got.resource.outputs.literals[0].value.scalar.primitive.float_value == slept


def test_a_connectors_pure_python_dependencies_are_bundled(tmp_path, tmp_path_factory):
    # A package in a -p folder and a helper module beside the connector,
    # neither installed anywhere else: the component must carry both.
    deps = tmp_path / "deps"
    (deps / "shouting").mkdir(parents=True)
    (deps / "shouting" / "__init__.py").write_text("def shout(text):\n    return text.upper() + '!'\n")
    (tmp_path / "greeting.py").write_text("def greet(name):\n    return f'hello, {name}'\n")
    (tmp_path / "shout_connector.py").write_text(
        textwrap.dedent(
            """
            from dataclasses import dataclass

            from greeting import greet
            from shouting import shout

            from flyte_connector import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta, TaskExecution

            @dataclass
            class Meta(ResourceMeta):
                text: str

            class ShoutConnector(AsyncConnector):
                name = "Shout Connector"
                task_type_name = "shout"
                metadata_type = Meta

                async def create(self, task_template, output_prefix, inputs=None, **kwargs):
                    return Meta(text=shout(greet(inputs["name"])))

                async def get(self, resource_meta, **kwargs):
                    return Resource(phase=TaskExecution.SUCCEEDED, outputs={"text": resource_meta.text})

                async def delete(self, resource_meta, **kwargs):
                    return None

            ConnectorRegistry.register(ShoutConnector())
            """
        )
    )
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "flyte_connector",
            "build",
            str(tmp_path / "shout_connector.py"),
            "-o",
            str(plugins / "shout.wasm"),
            "-p",
            str(deps),
            "--quiet",
        ],
        check=True,
    )
    with running_server(plugins, tmp_path_factory.mktemp("shout-server")) as server:
        stub = service_pb2_grpc.AsyncConnectorServiceStub(server.channel)
        variables = [("name", simple_type(SimpleType.STRING), str_literal("flyte"), "flyte")]
        created = stub.CreateTask(create_request("shout", variables), timeout=RPC_TIMEOUT_S)
        got = stub.GetTask(
            connector_pb2.GetTaskRequest(resource_meta=created.resource_meta, task_category=category("shout")),
            timeout=RPC_TIMEOUT_S,
        )
    assert_succeeded(got.resource)
    assert output_literals(got.resource)["text"].scalar.primitive.string_value == "HELLO, FLYTE!"

"""Connectors written in Python (the SDK in guest-sdk/python, built with
componentize-py): faults in a Python guest fail only their own call, a
connector's pure-Python dependencies are bundled into its component, and a
connector written for flyte's server ports by changing its imports.

`faulty-py.wasm` (tests/components/faulty-py) misbehaves as its `fault`
input asks. It is served alone, with a manifest that caps each call at 3 s
and 64 MiB and allows no outbound host.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from conftest import (
    RPC_TIMEOUT_S,
    HostedConnector,
    SimpleType,
    assert_succeeded,
    OUTPUT_PREFIX,
    bool_literal,
    category,
    create_request,
    expect_rpc_error,
    float_literal,
    hosted_connector,
    int_literal,
    list_literal,
    list_type,
    map_literal,
    map_type,
    output_literals,
    running_server,
    simple_type,
    str_literal,
)
from flyteidl2.connector import service_pb2_grpc
from flyteidl2.connector import connector_pb2
from flyteidl2.core import security_pb2

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
    assert json.loads(created.resource_meta) == {"fault": "none", "slept": 0.0, "tally": ""}


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


def test_a_retryable_poll_is_unavailable_and_the_next_call_is_served(faulty):
    # A Retryable from get fails that poll with UNAVAILABLE, which Flyte's
    # executor polls again; it is not a RETRYABLE_FAILED phase, which would
    # end the attempt. (Databricks' 503 poll, in test_databricks.py, shows
    # the same task polled again once the service recovers.)
    created = create(faulty, "retry-poll")
    request = connector_pb2.GetTaskRequest(resource_meta=created.resource_meta, task_category=category("faulty_py"))
    err = expect_rpc_error(lambda: faulty.stub.GetTask(request, timeout=RPC_TIMEOUT_S), grpc.StatusCode.UNAVAILABLE)
    assert err.details() == failure("get", "the service is busy, poll again")
    assert_still_serving(faulty)


# -- connection keys named like a call's own arguments ------------------------------------


def test_a_connection_key_named_like_an_argument_of_the_call_is_invalid_argument(faulty):
    why = "(a connection's secrets and configs reach the connector as keyword arguments)"
    # create: each of its four arguments, as a secret and as a config. The
    # `raise` fault would fail with INTERNAL had the connector's code run.
    for key in ("task_template", "output_prefix", "inputs", "task_execution_metadata"):
        for connection in (
            security_pb2.Connection(secrets={key: "s3cr3t"}),
            security_pb2.Connection(configs={key: "s3cr3t", "region": "eu"}),
        ):
            variables = [("fault", simple_type(SimpleType.STRING), str_literal("raise"), "raise")]
            request = create_request("faulty_py", variables, connection=connection)
            err = expect_rpc_error(
                lambda: faulty.stub.CreateTask(request, timeout=RPC_TIMEOUT_S), grpc.StatusCode.INVALID_ARGUMENT
            )
            assert err.details() == failure(
                "create",
                f"connection key '{key}' clashes with create's argument of the same name {why}: "
                "rename the secret or config",
            )
            assert "s3cr3t" not in err.details()
    # get and delete: their meta argument. The `retry-poll` task's get would
    # be UNAVAILABLE had the connector's code run.
    meta = create(faulty, "retry-poll").resource_meta
    connection = security_pb2.Connection(secrets={"resource_meta": "s3cr3t"})
    calls = {
        "get": lambda: faulty.stub.GetTask(
            connector_pb2.GetTaskRequest(
                resource_meta=meta, task_category=category("faulty_py"), connection=connection
            ),
            timeout=RPC_TIMEOUT_S,
        ),
        "delete": lambda: faulty.stub.DeleteTask(
            connector_pb2.DeleteTaskRequest(
                resource_meta=meta, task_category=category("faulty_py"), connection=connection
            ),
            timeout=RPC_TIMEOUT_S,
        ),
    }
    for operation, call in calls.items():
        err = expect_rpc_error(call, grpc.StatusCode.INVALID_ARGUMENT)
        assert err.details() == failure(
            operation,
            f"connection key 'resource_meta' clashes with {operation}'s argument of the same name {why}: "
            "rename the secret or config",
        )
    assert_still_serving(faulty)


# -- a connector written for flyte, ported by its imports ---------------------------------

# An echo connector written for flyte's connector server, the way flyte's own
# echo connector is: its meta keeps `inputs` as create received them, and is
# stored as `json.dumps(asdict(meta))` (ResourceMeta.encode); get returns
# them as outputs. create also does with `inputs` what flyte's connectors
# do: tests, walks and looks them up, and hands them to code that copies or
# serializes them. `{imports}` is flyte's imports or the SDK's: nothing else
# differs.
FLYTE_STYLE_ECHO = """\
import copy
import json
import pickle
from dataclasses import dataclass
from typing import Any, Dict, Optional

{imports}


@dataclass
class EchoMeta(ResourceMeta):
    job_id: str
    inputs: Optional[Dict[str, Any]] = None
    copies_agree: bool = False


class EchoConnector(AsyncConnector):
    name = "Echo Connector (written for flyte)"
    task_type_name = "flyte_style_echo"
    metadata_type = EchoMeta

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kwargs):
        names = [name for name, _ in inputs.items()] if inputs else []
        copies = [
            copy.copy(inputs),
            copy.deepcopy(inputs),
            pickle.loads(pickle.dumps(inputs)),
            dict(inputs),
            {{**inputs}},
            type(inputs)(inputs.items()),
            json.loads(json.dumps(inputs)),
        ]
        agree = all(c == inputs for c in copies) and inputs.get("absent", "none") == "none"
        return EchoMeta(job_id="echo-" + "-".join(sorted(names)), inputs=inputs, copies_agree=agree)

    async def get(self, resource_meta: EchoMeta, **kwargs) -> Resource:
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message=f"{{resource_meta.job_id}} is done",
            outputs=resource_meta.inputs,
        )

    async def delete(self, resource_meta: EchoMeta, **kwargs) -> None:
        return None


ConnectorRegistry.register(EchoConnector())
"""
FLYTE_IMPORTS = (
    "from flyte.connectors import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta\n"
    "from flyteidl2.core.execution_pb2 import TaskExecution"
)
SDK_IMPORTS = "from flyte_connector import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta, TaskExecution"

# (name, declared type, literal, the value flyte's connector sees)
FLYTE_STYLE_INPUTS = [
    ("count", simple_type(SimpleType.INTEGER), int_literal(7), 7),
    ("ratio", simple_type(SimpleType.FLOAT), float_literal(0.25), 0.25),
    ("label", simple_type(SimpleType.STRING), str_literal("nightly"), "nightly"),
    ("dry_run", simple_type(SimpleType.BOOLEAN), bool_literal(True), True),
    ("ids", list_type(simple_type(SimpleType.INTEGER)), list_literal([int_literal(1), int_literal(2)]), [1, 2]),
    (
        "weights",
        map_type(simple_type(SimpleType.FLOAT)),
        map_literal({"a": float_literal(0.5), "b": float_literal(1.5)}),
        {"a": 0.5, "b": 1.5},
    ),
]
PYTHON_TYPES = {"count": int, "ratio": float, "label": str, "dry_run": bool, "ids": list[int], "weights": dict}


def meta_under_flyte(source: Path) -> bytes:
    """What the connector's create returns under flyte itself (its
    `flyte.connectors` classes, the inputs as the plain dict flyte's server
    passes), encoded by flyte's ResourceMeta."""
    spec = importlib.util.spec_from_file_location("flyte_style_echo_under_flyte", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = {name: value for name, _, _, value in FLYTE_STYLE_INPUTS}
    meta = asyncio.run(module.EchoConnector().create(task_template=None, output_prefix=OUTPUT_PREFIX, inputs=inputs))
    return meta.encode()


def test_a_connector_written_for_flyte_ports_by_changing_its_imports(tmp_path, tmp_path_factory):
    from flyte.types import TypeEngine

    under_flyte = tmp_path / "under_flyte.py"
    under_flyte.write_text(FLYTE_STYLE_ECHO.format(imports=FLYTE_IMPORTS))
    ported = tmp_path / "flyte_style_echo.py"
    ported.write_text(FLYTE_STYLE_ECHO.format(imports=SDK_IMPORTS))
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    component = plugins / "flyte_style_echo.wasm"
    build = [sys.executable, "-m", "flyte_connector", "build", str(ported), "-o", str(component), "--quiet"]
    subprocess.run(build, check=True)
    with running_server(plugins, tmp_path_factory.mktemp("flyte-style-echo-server")) as server:
        stub = service_pb2_grpc.AsyncConnectorServiceStub(server.channel)
        created = stub.CreateTask(create_request("flyte_style_echo", FLYTE_STYLE_INPUTS), timeout=RPC_TIMEOUT_S)
        got = stub.GetTask(
            connector_pb2.GetTaskRequest(
                resource_meta=created.resource_meta, task_category=category("flyte_style_echo")
            ),
            timeout=RPC_TIMEOUT_S,
        )
        stub.DeleteTask(
            connector_pb2.DeleteTaskRequest(
                resource_meta=created.resource_meta, task_category=category("flyte_style_echo")
            ),
            timeout=RPC_TIMEOUT_S,
        )

    # The meta is byte for byte the one flyte's server stores for the same
    # connector and inputs; every copy of the inputs agreed with them.
    meta = json.loads(created.resource_meta)
    assert meta["copies_agree"] is True, meta
    assert created.resource_meta == meta_under_flyte(under_flyte)

    assert_succeeded(got.resource)
    assert got.resource.message == "echo-count-dry_run-ids-label-ratio-weights is done"
    outputs = output_literals(got.resource)
    assert sorted(outputs) == sorted(PYTHON_TYPES)
    # Flyte's type engine reads each output back as the input it was.
    for name, _, _, value in FLYTE_STYLE_INPUTS:
        read = asyncio.run(TypeEngine.to_python_value(outputs[name], PYTHON_TYPES[name]))
        assert read == value and type(read) is type(value), f"output {name!r}: {read!r}, sent {value!r}"

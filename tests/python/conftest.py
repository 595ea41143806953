"""Shared fixtures and helpers for the Python tests of flyte-connect.

The only gRPC client used here is the published `flyteidl2` Python stubs plus
`grpcio` (and `grpcio-health-checking` for the standard health service).

The server under test is started once per session and shared by every test
module:

    flyte-connect c0 --port PORT --prometheus_port MPORT --plugin-dir COMPONENTS

- binary:      $FLYTE_CONNECT_BIN        (default <repo>/target/release/flyte-connect)
- components:  $FLYTE_CONNECT_COMPONENTS (default: the first of <repo>/connectors
               and <repo>/target/test-components that holds both echo.wasm and
               faulty.wasm; `make test-python` sets it to the latter).

The connector modules (test_databricks.py, ...) start their own server with
one connector and run the harness's fakes as processes (`fake_service`):

- fakes:       $FLYTE_CONNECT_FAKE_SERVICES (default <repo>/target/release/fake-services)

Test modules import the helpers with `from conftest import ...` (pytest's
default `prepend` import mode puts this folder on sys.path).
"""

from __future__ import annotations

import dataclasses

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Tuple

import grpc
import pytest
from flyteidl2.connector import connector_pb2, service_pb2_grpc
from flyteidl2.core import (
    execution_pb2,
    identifier_pb2,
    interface_pb2,
    literals_pb2,
    security_pb2,
    tasks_pb2,
    types_pb2,
)
from flyteidl2.task import common_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVER_BIN = Path(os.environ.get("FLYTE_CONNECT_BIN", REPO_ROOT / "target" / "release" / "flyte-connect"))
REQUIRED_COMPONENTS = ("echo.wasm", "echo-py.wasm", "faulty.wasm")
FAKE_SERVICES_BIN = Path(
    os.environ.get("FLYTE_CONNECT_FAKE_SERVICES", REPO_ROOT / "target" / "release" / "fake-services")
)


def _default_components_dir() -> Path:
    # connectors/ holds the example connectors (`make connectors`); faulty.wasm is a
    # test component and is built into target/test-components (`make test-components`).
    candidates = [REPO_ROOT / "connectors", REPO_ROOT / "target" / "test-components"]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in REQUIRED_COMPONENTS):
            return candidate
    return candidates[0]


COMPONENTS_DIR = Path(os.environ.get("FLYTE_CONNECT_COMPONENTS") or _default_components_dir())

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RPC_TIMEOUT_S = 30.0

OUTPUT_PREFIX = "s3://conformance-bucket/outputs/run-1/a0"


# --------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen
    grpc_port: int
    metrics_port: int
    log_path: Path
    channel: grpc.Channel

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def free_ports(count: int) -> List[int]:
    """Distinct free loopback ports, picked by binding to port 0."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _wait_until_serving(server: Server) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    deadline = time.monotonic() + START_TIMEOUT_S
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        rc = server.process.poll()
        if rc is not None:
            pytest.fail(f"flyte-connect exited with code {rc} during start-up; output:\n{tail(server.log())}")
        try:
            resp = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return
            last_error = f"health status {health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)}"
        except grpc.RpcError as e:
            last_error = f"{e.code()}: {e.details()}"
        time.sleep(0.2)
    pytest.fail(
        f"flyte-connect did not become SERVING within {START_TIMEOUT_S:.0f}s ({last_error}); "
        f"output:\n{tail(server.log())}"
    )


@contextlib.contextmanager
def running_server(plugin_dir: Path, workdir: Path, extra_env: Dict[str, str] | None = None):
    """Runs `flyte-connect c0` serving `plugin_dir` until the block ends, then
    stops it with SIGTERM and checks it exited 0."""
    if not (SERVER_BIN.is_file() and os.access(SERVER_BIN, os.X_OK)):
        pytest.fail(f"flyte-connect binary not found at {SERVER_BIN} (set FLYTE_CONNECT_BIN or build it first)")
    grpc_port, metrics_port = free_ports(2)
    log_path = workdir / "server.log"
    env = dict(os.environ)
    env.pop("FLYTE_CONNECTOR_PATH", None)  # only the folder we pass may be loaded
    env.update(extra_env or {})

    cmd = [
        str(SERVER_BIN),
        "c0",
        "--port",
        str(grpc_port),
        "--prometheus_port",
        str(metrics_port),
        "--plugin-dir",
        str(plugin_dir),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    srv = Server(process, grpc_port, metrics_port, log_path, channel)
    try:
        _wait_until_serving(srv)
        yield srv
    finally:
        channel.close()
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                rc = process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                pytest.fail(f"flyte-connect did not stop within {STOP_TIMEOUT_S:.0f}s of SIGTERM")
        else:
            rc = process.returncode
    assert rc == 0, f"flyte-connect exited with code {rc} after SIGTERM; output:\n{tail(srv.log())}"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    missing = [name for name in REQUIRED_COMPONENTS if not (COMPONENTS_DIR / name).is_file()]
    if missing:
        pytest.fail(f"missing components in {COMPONENTS_DIR}: {', '.join(missing)} (set FLYTE_CONNECT_COMPONENTS)")
    with running_server(COMPONENTS_DIR, tmp_path_factory.mktemp("flyte-connect")) as srv:
        yield srv


@pytest.fixture
def connectors(server: Server) -> service_pb2_grpc.AsyncConnectorServiceStub:
    return service_pb2_grpc.AsyncConnectorServiceStub(server.channel)


@dataclasses.dataclass(frozen=True)
class Echo:
    """One of the two echo connectors: the Rust one and its Python twin."""

    task_type: str
    connector_name: str


ECHOES = [Echo("echo", "Echo Connector"), Echo("echo_py", "Echo Connector (Python)")]


@pytest.fixture(params=ECHOES, ids=[e.task_type for e in ECHOES])
def echo(request: pytest.FixtureRequest) -> Echo:
    """Each echo connector in turn: tests taking it run against both."""
    return request.param


@pytest.fixture
def metadata(server: Server) -> service_pb2_grpc.ConnectorMetadataServiceStub:
    return service_pb2_grpc.ConnectorMetadataServiceStub(server.channel)


@pytest.fixture
def health(server: Server) -> health_pb2_grpc.HealthStub:
    return health_pb2_grpc.HealthStub(server.channel)


# --------------------------------------------------------------------------------------
# The harness's fake services (tests/src/bin/fake_services.rs)
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def fake_service(kind: str, *args: object) -> Iterator[str]:
    """Runs `fake-services KIND ARGS...` until the block ends; yields the fake's
    base URL, http://127.0.0.1:PORT. The fake stops when its stdin closes."""
    if not FAKE_SERVICES_BIN.is_file():
        pytest.fail(f"fake-services not found at {FAKE_SERVICES_BIN} (run `make test-python`)")
    process = subprocess.Popen(
        [str(FAKE_SERVICES_BIN), kind, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        line = process.stdout.readline().strip()
        assert line.startswith("listening on "), f"fake-services {kind} did not start: {line!r}"
        yield "http://" + line.removeprefix("listening on ")
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def fake_record(base_url: str, what: str) -> Any:
    """A fake's record as JSON: `calls` (its request counters) or `submitted`
    (the bodies submitted, with their user agents, `[{"body", "user_agent"}]`)."""
    with urllib.request.urlopen(f"{base_url}/__fake/{what}", timeout=RPC_TIMEOUT_S) as answer:
        return json.load(answer)


# --------------------------------------------------------------------------------------
# One connector component served against a fake (the connector modules)
# --------------------------------------------------------------------------------------


@dataclass
class HostedConnector:
    """flyte-connect serving one connector component, and the fake it calls."""

    stub: service_pb2_grpc.AsyncConnectorServiceStub
    server: Server
    fake: str  # the fake's base URL


@contextlib.contextmanager
def hosted_connector(
    name: str, manifest: str, fake: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostedConnector]:
    """flyte-connect serving NAME.wasm of the test components, with `manifest`
    as its NAME.toml, logging at debug (so secret checks see everything), until
    the block ends."""
    plugins = tmp_path_factory.mktemp(f"{name}-plugins")
    shutil.copy(COMPONENTS_DIR / f"{name}.wasm", plugins / f"{name}.wasm")
    (plugins / f"{name}.toml").write_text(manifest)
    with running_server(plugins, tmp_path_factory.mktemp(f"{name}-server"), {"RUST_LOG": "debug"}) as srv:
        yield HostedConnector(service_pb2_grpc.AsyncConnectorServiceStub(srv.channel), srv, fake)


def key_lines(pem: str) -> List[str]:
    """The base64 lines of a PEM key: none may ever show up in a log or a message."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def plugin_template(task: Any) -> tasks_pb2.TaskTemplate:
    """The TaskTemplate flyte registers for `task` (a task plugin's task). The
    tasks' code lives in this folder, which flyte's resolver needs to know."""
    from flyte._internal.runtime.task_serde import get_proto_task
    from flyte.models import SerializationContext

    here = Path(__file__).resolve().parent
    context = SerializationContext(version="v1", project="p", domain="development", org="o", root_dir=here)
    return get_proto_task(task, context)


def flyte_inputs(task: Any, **inputs: Any) -> Any:
    """`inputs` as flyte's controllers send them for `task` (its type engine's
    literals), a flyte `Inputs`."""
    from flyte._internal.runtime.convert import convert_from_native_to_inputs

    return asyncio.run(convert_from_native_to_inputs(task.native_interface, **inputs))


def phase_name(resource: connector_pb2.Resource) -> str:
    return execution_pb2.TaskExecution.Phase.Name(resource.phase)


# --------------------------------------------------------------------------------------
# Building Flyte messages
# --------------------------------------------------------------------------------------

SimpleType = types_pb2.SimpleType


def simple_type(t: int) -> types_pb2.LiteralType:
    return types_pb2.LiteralType(simple=t)


def list_type(element: types_pb2.LiteralType) -> types_pb2.LiteralType:
    return types_pb2.LiteralType(collection_type=element)


def map_type(value: types_pb2.LiteralType) -> types_pb2.LiteralType:
    return types_pb2.LiteralType(map_value_type=value)


def primitive(**kwargs) -> literals_pb2.Literal:
    return literals_pb2.Literal(scalar=literals_pb2.Scalar(primitive=literals_pb2.Primitive(**kwargs)))


def int_literal(v: int) -> literals_pb2.Literal:
    return primitive(integer=v)


def float_literal(v: float) -> literals_pb2.Literal:
    return primitive(float_value=v)


def str_literal(v: str) -> literals_pb2.Literal:
    return primitive(string_value=v)


def bool_literal(v: bool) -> literals_pb2.Literal:
    return primitive(boolean=v)


def list_literal(items: List[literals_pb2.Literal]) -> literals_pb2.Literal:
    return literals_pb2.Literal(collection=literals_pb2.LiteralCollection(literals=items))


def map_literal(items: Dict[str, literals_pb2.Literal]) -> literals_pb2.Literal:
    return literals_pb2.Literal(map=literals_pb2.LiteralMap(literals=items))


# (name, declared type, literal, the value the connector sees / the test compares against)
Var = Tuple[str, types_pb2.LiteralType, literals_pb2.Literal, object]


def variable_map(variables: List[Var]) -> interface_pb2.VariableMap:
    return interface_pb2.VariableMap(
        variables=[
            interface_pb2.VariableEntry(key=name, value=interface_pb2.Variable(type=lt, description=name))
            for name, lt, _, _ in variables
        ]
    )


def task_template(task_type: str, variables: List[Var] = (), version: int = 0) -> tasks_pb2.TaskTemplate:
    variables = list(variables)
    return tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK,
            project="conformance",
            domain="development",
            name=f"conformance.{task_type}",
            version="v1",
        ),
        type=task_type,
        task_type_version=version,
        interface=interface_pb2.TypedInterface(inputs=variable_map(variables), outputs=variable_map(variables)),
    )


def task_inputs(variables: List[Var]) -> common_pb2.Inputs:
    return common_pb2.Inputs(literals=[common_pb2.NamedLiteral(name=name, value=lit) for name, _, lit, _ in variables])


def create_request(
    task_type: str,
    variables: List[Var] = (),
    version: int = 0,
    connection: security_pb2.Connection | None = None,
) -> connector_pb2.CreateTaskRequest:
    variables = list(variables)
    req = connector_pb2.CreateTaskRequest(
        template=task_template(task_type, variables, version),
        inputs=task_inputs(variables),
        output_prefix=OUTPUT_PREFIX,
    )
    if connection is not None:
        req.connection.CopyFrom(connection)
    return req


def category(name: str, version: int = 0) -> connector_pb2.TaskCategory:
    return connector_pb2.TaskCategory(name=name, version=version)


def expect_rpc_error(call: Callable[[], object], code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert err.code() == code, f"expected {code}, got {err.code()}: {err.details()!r}"
    return err


def echo_round_trip(
    stub: service_pb2_grpc.AsyncConnectorServiceStub,
    variables: List[Var],
    connection: security_pb2.Connection | None = None,
    task_type: str = "echo",
) -> connector_pb2.Resource:
    """CreateTask, GetTask and DeleteTask on an echo connector (task type
    `echo` or `echo_py`); the resource GetTask returned."""
    created = stub.CreateTask(create_request(task_type, variables, connection=connection), timeout=RPC_TIMEOUT_S)
    assert created.resource_meta, "CreateTask returned empty resource_meta"
    got = stub.GetTask(
        connector_pb2.GetTaskRequest(
            resource_meta=created.resource_meta,
            task_category=category(task_type),
            output_prefix=OUTPUT_PREFIX,
            connection=connection,
        ),
        timeout=RPC_TIMEOUT_S,
    )
    stub.DeleteTask(
        connector_pb2.DeleteTaskRequest(
            resource_meta=created.resource_meta, task_category=category(task_type), connection=connection
        ),
        timeout=RPC_TIMEOUT_S,
    )
    return got.resource


def assert_succeeded(resource: connector_pb2.Resource) -> None:
    assert resource.phase == execution_pb2.TaskExecution.SUCCEEDED, (
        f"phase {execution_pb2.TaskExecution.Phase.Name(resource.phase)}, message {resource.message!r}"
    )


def output_literals(resource: connector_pb2.Resource) -> Dict[str, literals_pb2.Literal]:
    outputs = {nl.name: nl.value for nl in resource.outputs.literals}
    assert len(outputs) == len(resource.outputs.literals), "an output name is listed twice"
    return outputs


def assert_outputs_equal_inputs(resource: connector_pb2.Resource, variables: List[Var]) -> None:
    assert_succeeded(resource)
    outputs = {nl.name: nl.value for nl in resource.outputs.literals}
    expected = {name: lit for name, _, lit, _ in variables}
    assert sorted(outputs) == sorted(expected)
    for name, lit in expected.items():
        assert outputs[name] == lit, f"output {name!r}: expected {lit}, got {outputs[name]}"

"""Conformance of the flyte-connect binary, seen through the published Flyte client.

The only gRPC client used here is the published `flyteidl2` Python stubs plus
`grpcio` (and `grpcio-health-checking` for the standard health service): if
these tests pass, a Flyte deployment talking to the Python connector server
(`c0` from the `flyte` package) can talk to flyte-connect instead.

The whole suite runs once per set of components, with the same binary:
those of this build, and those in each `tests/fixtures/contract-VERSION`,
built from the SDKs against `flyte:connector@VERSION` and committed, which
every later build must keep loading and serving unchanged (the contract's
promise, docs/authoring/contract.md). Tests taking the `echo` fixture run against both
echo connectors: the Rust `echo` and its Python twin `echo_py`, built with the
Python SDK.

Where flyte-connect answers more precisely than the Python server (UNIMPLEMENTED
instead of UNKNOWN, INVALID_ARGUMENT for a request without a template, NOT_FOUND
for unknown types on the metrics/logs calls and GetConnector), the test asserts
flyte-connect's documented behaviour (shared DESIGN.md) and says so.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Dict, List, Tuple

import grpc
import pytest
from conftest import (
    COMPONENTS_DIR,
    REPO_ROOT,
    REQUIRED_COMPONENTS,
    RPC_TIMEOUT_S,
    Server,
    SimpleType,
    Var,
    assert_outputs_equal_inputs,
    bool_literal,
    category,
    create_request,
    echo_round_trip,
    expect_rpc_error,
    float_literal,
    int_literal,
    list_literal,
    list_type,
    map_literal,
    map_type,
    simple_type,
    str_literal,
    running_server,
    tail,
    task_inputs,
)
from flyteidl2.connector import connector_pb2
from flyteidl2.core import security_pb2
from google.protobuf import duration_pb2, timestamp_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

#: Components built against each released flyte:connector@1.x and committed,
#: a folder per version (`make contract-fixtures` made them; the Python one
#: is xz-compressed).
CONTRACT_FIXTURES = sorted((REPO_ROOT / "tests" / "fixtures").glob("contract-*"))


def contract_fixtures(folder: Path, into: Path) -> Path:
    """The committed components of `folder`, unpacked into `into`."""
    for fixture in sorted(folder.iterdir()):
        if fixture.suffix == ".wasm":
            shutil.copy(fixture, into / fixture.name)
        elif fixture.name.endswith(".wasm.xz"):
            (into / fixture.name.removesuffix(".xz")).write_bytes(lzma.decompress(fixture.read_bytes()))
    missing = [name for name in REQUIRED_COMPONENTS if not (into / name).is_file()]
    assert not missing, f"the contract fixtures of {folder.name} lack {missing}"
    return into


def contract_of(param: str) -> Tuple[int, ...] | None:
    """The contract version a `server` param's components were built
    against; None for this build's own."""
    if param == "build":
        return None
    return tuple(int(part) for part in param.removeprefix("contract-").split("."))


@pytest.fixture(scope="module", params=["build"] + [folder.name for folder in CONTRACT_FIXTURES])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The server, serving this build's components, then each version's
    committed ones."""
    if request.param == "build":
        plugins = COMPONENTS_DIR
    else:
        folder = REPO_ROOT / "tests" / "fixtures" / request.param
        plugins = contract_fixtures(folder, tmp_path_factory.mktemp(request.param))
    with running_server(plugins, tmp_path_factory.mktemp(f"flyte-connect-{request.param}")) as srv:
        srv.contract = contract_of(request.param)
        yield srv


ASYNC_SERVICE = "flyteidl2.connector.AsyncConnectorService"
METADATA_SERVICE = "flyteidl2.connector.ConnectorMetadataService"

ECHO_CONNECTOR = "Echo Connector"
PYTHON_ECHO_CONNECTOR = "Echo Connector (Python)"
FAULTY_CONNECTOR = "Faulty Connector"

# The exact text of the Python server's `_handle_exception` (flyte/connectors/_server.py):
#   f"Cannot find connector for task type: {task_type}."
#   f"failed to {operation} {task_type} task with error:\n {e}."
NOT_FOUND_MESSAGE = "Cannot find connector for task type: {}."
CONNECTOR_ERROR_MESSAGE = "failed to {} {} task with error:\n {}."


# --------------------------------------------------------------------------------------
# Echo inputs
# --------------------------------------------------------------------------------------

# (name, declared type, literal, the JSON value the connector sees)
ECHO_VARIABLES: List[Var] = [
    ("an_int", simple_type(SimpleType.INTEGER), int_literal(42), 42),
    ("a_float", simple_type(SimpleType.FLOAT), float_literal(1.5), 1.5),
    ("a_string", simple_type(SimpleType.STRING), str_literal("héllo, \"world\""), "héllo, \"world\""),
    ("a_bool", simple_type(SimpleType.BOOLEAN), bool_literal(True), True),
    (
        "int_list",
        list_type(simple_type(SimpleType.INTEGER)),
        list_literal([int_literal(1), int_literal(-2), int_literal(3)]),
        [1, -2, 3],
    ),
    (
        # 2.0 is a whole number: it must come back as a float literal, not an integer.
        "float_map",
        map_type(simple_type(SimpleType.FLOAT)),
        map_literal({"a": float_literal(0.25), "b": float_literal(2.0)}),
        {"a": 0.25, "b": 2.0},
    ),
]


# --------------------------------------------------------------------------------------
# Prometheus text format
# --------------------------------------------------------------------------------------

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def parse_metrics(text: str) -> List[Tuple[str, Dict[str, str], float]]:
    samples = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = _SAMPLE_RE.match(line)
        if not m:
            continue
        name, raw_labels, value = m.groups()
        labels = {}
        if raw_labels:
            for k, v in _LABEL_RE.findall(raw_labels):
                labels[k] = v.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        try:
            samples.append((name, labels, float(value)))
        except ValueError:
            continue
    return samples


def scrape(server: Server) -> List[Tuple[str, Dict[str, str], float]]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                assert resp.status == 200
                return parse_metrics(resp.read().decode("utf-8"))
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def sample_value(samples, name: str, **labels: str) -> float:
    """The value of the sample with exactly these labels (0 when absent)."""
    values = [v for n, ls, v in samples if n == name and ls == labels]
    assert len(values) <= 1, f"duplicate samples for {name}{labels}"
    return values[0] if values else 0.0


# --------------------------------------------------------------------------------------
# Tests: health and start-up
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["", ASYNC_SERVICE, METADATA_SERVICE])
def test_health_check_reports_serving(health: health_pb2_grpc.HealthStub, service: str):
    resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT_S)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_startup_output_lists_loaded_connectors_and_task_types(server: Server):
    # Python prints a rich table "Connector Metadata" with rows like
    # "Echo Connector │ echo (0)"; the exact drawing is not part of the contract.
    out = server.log()
    for text in (ECHO_CONNECTOR, FAULTY_CONNECTOR, "echo", "panic", "fail", "invalid"):
        assert text in out, f"{text!r} missing from start-up output:\n{tail(out)}"


# --------------------------------------------------------------------------------------
# Tests: the async connector service, happy path
# --------------------------------------------------------------------------------------


def test_echo_round_trip_returns_inputs_as_outputs(connectors, echo):
    resource = echo_round_trip(connectors, ECHO_VARIABLES, task_type=echo.task_type)
    assert_outputs_equal_inputs(resource, ECHO_VARIABLES)


@pytest.mark.parametrize("name,lt,lit,native", ECHO_VARIABLES, ids=[v[0] for v in ECHO_VARIABLES])
def test_echo_round_trip_preserves_each_literal_kind(connectors, echo, name, lt, lit, native):
    variables = [(name, lt, lit, native)]
    assert_outputs_equal_inputs(echo_round_trip(connectors, variables, task_type=echo.task_type), variables)


def test_echo_round_trip_preserves_int64_precision(connectors, echo):
    big = 2**53 + 1  # not representable as a double
    variables = [
        ("big", simple_type(SimpleType.INTEGER), int_literal(big), big),
        ("min", simple_type(SimpleType.INTEGER), int_literal(-(2**63)), -(2**63)),
    ]
    assert_outputs_equal_inputs(echo_round_trip(connectors, variables, task_type=echo.task_type), variables)


def test_echo_round_trip_without_inputs(connectors, echo):
    resource = echo_round_trip(connectors, [], task_type=echo.task_type)
    assert_outputs_equal_inputs(resource, [])


def test_echo_accepts_connection_secrets_and_configs(connectors, echo):
    connection = security_pb2.Connection(
        task_type=echo.task_type,
        secrets={"token": "s3cr3t", "shared": "from-secrets"},
        configs={"region": "us-east-1", "shared": "from-configs"},
    )
    resource = echo_round_trip(connectors, ECHO_VARIABLES, connection=connection, task_type=echo.task_type)
    assert_outputs_equal_inputs(resource, ECHO_VARIABLES)


def test_delete_echo_task_succeeds(connectors, echo):
    created = connectors.CreateTask(create_request(echo.task_type, ECHO_VARIABLES), timeout=RPC_TIMEOUT_S)
    resp = connectors.DeleteTask(
        connector_pb2.DeleteTaskRequest(resource_meta=created.resource_meta, task_category=category(echo.task_type)),
        timeout=RPC_TIMEOUT_S,
    )
    assert resp == connector_pb2.DeleteTaskResponse()


def test_echo_task_logs_list_each_input_as_json(connectors, echo):
    created = connectors.CreateTask(create_request(echo.task_type, ECHO_VARIABLES), timeout=RPC_TIMEOUT_S)
    parts = list(
        connectors.GetTaskLogs(
            connector_pb2.GetTaskLogsRequest(
                resource_meta=created.resource_meta, task_category=category(echo.task_type), lines=100
            ),
            timeout=RPC_TIMEOUT_S,
        )
    )
    assert parts, "GetTaskLogs streamed nothing"
    lines: List[str] = []
    for part in parts:
        kind = part.WhichOneof("part")
        if kind == "header":
            assert part.header.token == "", f"unexpected continuation token {part.header.token!r}"
        elif kind == "body":
            if part.body.lines:
                lines.extend(line.message for line in part.body.lines)
            else:
                lines.extend(part.body.results)
    assert len(lines) == len(ECHO_VARIABLES), f"log lines: {lines}"
    seen = {}
    for line in lines:
        name, sep, raw = line.rstrip("\n").partition("=")
        assert sep, f"log line without '=': {line!r}"
        seen[name] = json.loads(raw)
    assert seen == {name: native for name, _, _, native in ECHO_VARIABLES}


def test_echo_task_metrics_answer_each_query(connectors, echo):
    created = connectors.CreateTask(create_request(echo.task_type, ECHO_VARIABLES), timeout=RPC_TIMEOUT_S)
    queries = ["cpu_utilization", "memory_bytes{pod=\"a0\"}"]
    resp = connectors.GetTaskMetrics(
        connector_pb2.GetTaskMetricsRequest(
            resource_meta=created.resource_meta,
            task_category=category(echo.task_type),
            queries=queries,
            start_time=timestamp_pb2.Timestamp(seconds=1_700_000_000),
            end_time=timestamp_pb2.Timestamp(seconds=1_700_000_600),
            step=duration_pb2.Duration(seconds=60),
        ),
        timeout=RPC_TIMEOUT_S,
    )
    assert [r.metric for r in resp.results] == queries


# --------------------------------------------------------------------------------------
# Tests: errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["create", "get", "delete"])
def test_unknown_task_type_is_not_found(connectors, operation):
    task_type = f"no-such-type-{operation}"
    calls = {
        "create": lambda: connectors.CreateTask(create_request(task_type, ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        "get": lambda: connectors.GetTask(
            connector_pb2.GetTaskRequest(resource_meta=b"{}", task_category=category(task_type)),
            timeout=RPC_TIMEOUT_S,
        ),
        "delete": lambda: connectors.DeleteTask(
            connector_pb2.DeleteTaskRequest(resource_meta=b"{}", task_category=category(task_type)),
            timeout=RPC_TIMEOUT_S,
        ),
    }
    err = expect_rpc_error(calls[operation], grpc.StatusCode.NOT_FOUND)
    assert err.details() == NOT_FOUND_MESSAGE.format(task_type)


@pytest.mark.parametrize("operation", ["create", "get"])
def test_unknown_task_type_version_is_not_found(connectors, operation):
    # The registry key is (name, version); like Python, the message names the type only.
    calls = {
        "create": lambda: connectors.CreateTask(create_request("echo", ECHO_VARIABLES, version=7), timeout=RPC_TIMEOUT_S),
        "get": lambda: connectors.GetTask(
            connector_pb2.GetTaskRequest(resource_meta=b"{}", task_category=category("echo", 7)),
            timeout=RPC_TIMEOUT_S,
        ),
    }
    err = expect_rpc_error(calls[operation], grpc.StatusCode.NOT_FOUND)
    assert err.details() == NOT_FOUND_MESSAGE.format("echo")


@pytest.mark.parametrize("call", ["metrics", "logs"])
def test_unknown_task_type_on_metrics_and_logs_is_not_found(connectors, call):
    # Python answers UNKNOWN here ("Unexpected <class '...FlyteConnectorNotFound'>: ...").
    task_type = f"no-such-type-{call}"
    if call == "metrics":
        fn = lambda: connectors.GetTaskMetrics(  # noqa: E731
            connector_pb2.GetTaskMetricsRequest(resource_meta=b"{}", task_category=category(task_type), queries=["q"]),
            timeout=RPC_TIMEOUT_S,
        )
    else:
        fn = lambda: list(  # noqa: E731
            connectors.GetTaskLogs(
                connector_pb2.GetTaskLogsRequest(resource_meta=b"{}", task_category=category(task_type)),
                timeout=RPC_TIMEOUT_S,
            )
        )
    err = expect_rpc_error(fn, grpc.StatusCode.NOT_FOUND)
    assert err.details() == NOT_FOUND_MESSAGE.format(task_type)


def test_connector_error_is_internal_with_python_message(connectors):
    err = expect_rpc_error(
        lambda: connectors.CreateTask(create_request("fail", ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.INTERNAL,
    )
    assert err.details() == CONNECTOR_ERROR_MESSAGE.format("create", "fail", "the external service said no")


def test_connector_panic_is_internal_and_server_keeps_serving(connectors):
    expect_rpc_error(
        lambda: connectors.CreateTask(create_request("panic", ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.INTERNAL,
    )
    # The trap failed that call only: the same server still runs other tasks.
    assert_outputs_equal_inputs(echo_round_trip(connectors, ECHO_VARIABLES), ECHO_VARIABLES)
    # ...and the faulty component itself can be called again.
    expect_rpc_error(
        lambda: connectors.CreateTask(create_request("panic", ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.INTERNAL,
    )


def test_connector_rejecting_request_is_invalid_argument(connectors):
    expect_rpc_error(
        lambda: connectors.CreateTask(create_request("invalid", ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_create_without_template_is_invalid_argument(connectors):
    # Python answers NOT_FOUND "Cannot find connector for task type: ." here.
    expect_rpc_error(
        lambda: connectors.CreateTask(
            connector_pb2.CreateTaskRequest(inputs=task_inputs(ECHO_VARIABLES), output_prefix="s3://b/o"),
            timeout=RPC_TIMEOUT_S,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


@pytest.mark.parametrize("task_type", ["fail", "panic", "invalid"])
@pytest.mark.parametrize("call", ["metrics", "logs"])
def test_faulty_connector_metrics_and_logs_are_unimplemented(connectors, call, task_type):
    # Python answers UNKNOWN "Unexpected <class 'NotImplementedError'>: " here.
    if call == "metrics":
        fn = lambda: connectors.GetTaskMetrics(  # noqa: E731
            connector_pb2.GetTaskMetricsRequest(resource_meta=b"{}", task_category=category(task_type), queries=["q"]),
            timeout=RPC_TIMEOUT_S,
        )
    else:
        fn = lambda: list(  # noqa: E731
            connectors.GetTaskLogs(
                connector_pb2.GetTaskLogsRequest(resource_meta=b"{}", task_category=category(task_type)),
                timeout=RPC_TIMEOUT_S,
            )
        )
    expect_rpc_error(fn, grpc.StatusCode.UNIMPLEMENTED)


# --------------------------------------------------------------------------------------
# Tests: the metadata service
# --------------------------------------------------------------------------------------


def _categories(connector: connector_pb2.Connector) -> set:
    return {(c.name, c.version) for c in connector.supported_task_categories}


#: The faulty component's task types, and the contract version since which
#: it has each one that came later.
FAULTY_TASK_TYPES = {
    "panic": None,
    "fail": None,
    "invalid": None,
    "sleep": None,
    "slow": None,
    "fetch": None,
    "memory": None,
    "inspect": None,
    "remember": None,
    "tally": None,
    "fan_out": None,
    "touch": None,
    "shout": None,
    "ssh": (1, 1, 0),
}


def test_list_connectors_groups_task_types_by_connector(server, metadata):
    resp = metadata.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=RPC_TIMEOUT_S)
    by_name = {c.name: c for c in resp.connectors}
    assert len(by_name) == len(resp.connectors), "a connector name is listed twice"
    assert ECHO_CONNECTOR in by_name and FAULTY_CONNECTOR in by_name, sorted(by_name)
    assert _categories(by_name[ECHO_CONNECTOR]) == {("echo", 0)}
    assert _categories(by_name[PYTHON_ECHO_CONNECTOR]) == {("echo_py", 0)}
    expected = {
        name
        for name, since in FAULTY_TASK_TYPES.items()
        if since is None or server.contract is None or server.contract >= since
    }
    assert {name for name, _ in _categories(by_name[FAULTY_CONNECTOR])} == expected


def test_get_connector_returns_echo_connector(metadata, echo):
    resp = metadata.GetConnector(connector_pb2.GetConnectorRequest(name=echo.connector_name), timeout=RPC_TIMEOUT_S)
    assert resp.connector.name == echo.connector_name
    assert _categories(resp.connector) == {(echo.task_type, 0)}
    listed = metadata.ListConnectors(connector_pb2.ListConnectorsRequest(), timeout=RPC_TIMEOUT_S)
    assert resp.connector in list(listed.connectors)


def test_get_unknown_connector_is_not_found(metadata):
    # Python answers UNKNOWN "Unexpected <class '...FlyteConnectorNotFound'>: Cannot find connector for name: nope."
    expect_rpc_error(
        lambda: metadata.GetConnector(connector_pb2.GetConnectorRequest(name="nope"), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.NOT_FOUND,
    )


# --------------------------------------------------------------------------------------
# Tests: Prometheus metrics
# --------------------------------------------------------------------------------------

SUCCESS = "flyte_connector_requests_success_total"
FAILURE = "flyte_connector_requests_failure_total"
LATENCY_COUNT = "flyte_connector_request_latency_seconds_count"
INPUT_BYTES_COUNT = "flyte_connector_input_literal_bytes_count"


def test_metrics_count_successful_requests_per_operation(server, connectors, echo):
    before = scrape(server)
    echo_round_trip(connectors, ECHO_VARIABLES, task_type=echo.task_type)
    after = scrape(server)
    for op in ("create", "get", "delete"):
        labels = {"task_type": echo.task_type, "operation": op}
        assert sample_value(after, SUCCESS, **labels) >= sample_value(before, SUCCESS, **labels) + 1, op
        assert sample_value(after, LATENCY_COUNT, **labels) >= sample_value(before, LATENCY_COUNT, **labels) + 1, op
    assert sample_value(after, INPUT_BYTES_COUNT, task_type=echo.task_type) >= (
        sample_value(before, INPUT_BYTES_COUNT, task_type=echo.task_type) + 1
    )


def test_metrics_count_unknown_task_type_as_404(server, connectors):
    # The Python server labels the failure with the task type the client
    # sent; we count every unknown task type under one label, so a client
    # cannot grow the metrics without bound.
    task_type = "no-such-type-metrics-404"
    labels = {"task_type": "_unknown", "operation": "create", "error_code": "404"}
    before = scrape(server)
    expect_rpc_error(
        lambda: connectors.CreateTask(create_request(task_type, ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.NOT_FOUND,
    )
    samples = scrape(server)
    assert sample_value(samples, FAILURE, **labels) == sample_value(before, FAILURE, **labels) + 1
    assert sample_value(samples, FAILURE, task_type=task_type, operation="create", error_code="404") == 0
    assert sample_value(samples, SUCCESS, task_type=task_type, operation="create") == 0


def test_metrics_count_connector_failure_as_500(server, connectors):
    before = scrape(server)
    expect_rpc_error(
        lambda: connectors.CreateTask(create_request("fail", ECHO_VARIABLES), timeout=RPC_TIMEOUT_S),
        grpc.StatusCode.INTERNAL,
    )
    after = scrape(server)
    labels = {"task_type": "fail", "operation": "create", "error_code": "500"}
    assert sample_value(after, FAILURE, **labels) >= sample_value(before, FAILURE, **labels) + 1

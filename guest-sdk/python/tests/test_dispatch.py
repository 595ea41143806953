"""The component's calls, dispatched under plain CPython: WIT records in,
WIT records (or WIT errors) out, with bindings componentize-py generates
from the SDK's own WIT, as in a build. Each call is served in both worlds
(`serve`): run on a `PollLoop` as the sync export runs it, and as a task of
componentize-py's loop on a component host as the async export runs it."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import pytest

import flyte_connector._version
from flyte_connector import (
    AsyncConnector,
    ConnectorError,
    ConnectorRegistry,
    File,
    InvalidRequest,
    LogsPage,
    Resource,
    ResourceMeta,
    Retryable,
    TaskExecution,
    TaskLog,
    Typed,
    _loop,
    http,
)


@pytest.fixture(scope="module")
def wit(bindings):
    """The generated `connector_types` module."""
    from wit_world.imports import connector_types

    return connector_types


@pytest.fixture
def dispatch(wit):
    """`flyte_connector._dispatch`, which needs the generated
    `componentize_py_types` (the `wit` fixture puts it on the path)."""
    from flyte_connector import _dispatch

    return _dispatch


class NoClock:
    """These connectors never wait on I/O or timers."""

    def now(self) -> int:
        return 0

    def subscribe_instant(self, when: int) -> Any:
        raise AssertionError("no timers here")

    def poll(self, pollables):
        raise AssertionError("nothing to poll")


@dataclass
class JobMeta(ResourceMeta):
    job_id: str
    attempt: int = 1


class JobConnector(AsyncConnector):
    name = "Job Connector"
    task_type_name = "job"
    task_type_version = 2
    metadata_type = JobMeta
    seen: Dict[str, Any] = {}
    behaviour = "ok"

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kwargs):
        JobConnector.seen = dict(
            template=task_template, output_prefix=output_prefix, inputs=inputs, metadata=task_execution_metadata, kwargs=kwargs
        )
        faults = {
            "invalid": InvalidRequest("cluster_id is missing"),
            "retry": Retryable("throttled"),
            "503": http.StatusError("POST", "https://svc/api", 503, "unavailable"),
            "404": http.StatusError("POST", "https://svc/api", 404, "no such job"),
            "bug": KeyError("run_id"),
            "said": ConnectorError("the workspace refused the token"),
        }
        if self.behaviour in faults:
            raise faults[self.behaviour]
        return JobMeta(job_id="j-1")

    async def get(self, resource_meta, **kwargs):
        JobConnector.seen = dict(meta=resource_meta, kwargs=kwargs)
        return Resource(
            phase=TaskExecution.SUCCEEDED,
            message="done",
            log_links=[TaskLog(uri="https://svc/jobs/j-1", name="Console", link_type=TaskLog.DASHBOARD)],
            outputs={
                "count": 3,
                "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
                "report": File(uri="s3://b/r.csv", format="csv"),
                "ratio": Typed(1, {"simple": "FLOAT"}),
            },
            custom_info={"job": resource_meta.job_id},
        )

    async def delete(self, resource_meta, **kwargs):
        JobConnector.seen = dict(meta=resource_meta, kwargs=kwargs)
        return None


@dataclass
class EchoMeta(ResourceMeta):
    job_id: str
    inputs: Optional[Dict[str, Any]] = None


class FlyteStyleEchoConnector(AsyncConnector):
    """Written as flyte's echo connector is: the meta keeps the inputs as
    they came, and is encoded with json.dumps(asdict(meta))."""

    name = "Echo Connector"
    task_type_name = "echo"
    metadata_type = EchoMeta

    async def create(self, task_template, output_prefix, inputs=None, task_execution_metadata=None, **kwargs):
        return EchoMeta(job_id="echo-" + "-".join(name for name in inputs), inputs=inputs)

    async def get(self, resource_meta, **kwargs):
        return Resource(phase=TaskExecution.SUCCEEDED, outputs=resource_meta.inputs)

    async def delete(self, resource_meta, **kwargs):
        return None


@pytest.fixture(params=["sync", "async"])
def serve(request, wit, dispatch):
    """`serve(operation, request)`: the answer to the call, or its WIT error
    raised as `Err`, from the sync world's export or the async world's."""
    if request.param == "sync":
        return lambda operation, call: dispatch.run(getattr(dispatch, operation)(wit, call))
    host = request.getfixturevalue("component")
    return lambda operation, call: host.serve(getattr(host.guest.AsyncConnector(), operation)(call))


@pytest.fixture
def connector(monkeypatch, dispatch):
    monkeypatch.setattr(_loop, "default_clock", NoClock)
    monkeypatch.delenv(dispatch.TASK_TYPE_VARIABLE, raising=False)
    ConnectorRegistry._clear()
    instance = JobConnector()
    ConnectorRegistry.register(instance)
    yield instance
    ConnectorRegistry._clear()


def create_request(wit, inputs: Dict[str, Any], types: Dict[str, Any]):
    template = {"type": "job", "custom": {"cluster": "c1"}, "container": {"image": "img:1", "args": ["run"]}}
    return wit.CreateRequest(
        inputs=json.dumps(inputs),
        input_types=json.dumps(types),
        template=json.dumps(template),
        output_prefix="s3://b/out",
        task_execution_metadata=json.dumps({"namespace": "flyte"}),
        connection=[("token", "s3cr3t"), ("region", "eu")],
    )


def test_metadata_names_the_connector_and_its_task_type(wit, dispatch, connector, monkeypatch):
    meta = dispatch.metadata(wit)
    assert meta.name == "Job Connector"
    assert [(c.name, c.version) for c in meta.task_categories] == [("job", 2)]
    assert meta.sdk == f"flyte-connector-sdk {flyte_connector._version.VERSION} (Python)"
    monkeypatch.setenv(dispatch.TASK_TYPE_VARIABLE, "job_py")
    assert [c.name for c in dispatch.metadata(wit).task_categories] == ["job_py"]


def test_create_gets_flyte_arguments_and_returns_the_encoded_meta(wit, dispatch, serve, connector):
    meta = serve(
        "create",
        create_request(
            wit, {"n": 3, "at": "2024-01-02T03:04:05+00:00"}, {"n": {"simple": "INTEGER"}, "at": {"simple": "DATETIME"}}
        ),
    )
    assert meta == b'{"job_id": "j-1", "attempt": 1}'
    seen = JobConnector.seen
    assert seen["inputs"] == {"n": 3, "at": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)}
    assert seen["inputs"].json == {"n": 3, "at": "2024-01-02T03:04:05+00:00"}
    assert seen["inputs"].types == {"n": {"simple": "INTEGER"}, "at": {"simple": "DATETIME"}}
    assert seen["template"].custom == {"cluster": "c1"}
    assert seen["template"].container.image == "img:1"
    assert seen["metadata"].namespace == "flyte"
    assert seen["output_prefix"] == "s3://b/out"
    assert seen["kwargs"] == {"token": "s3cr3t", "region": "eu"}


def test_get_returns_the_resource_with_typed_outputs(wit, dispatch, serve, connector):
    request = wit.GetRequest(
        task_category=wit.TaskCategory("job", 2), resource_meta=b'{"job_id": "j-1", "attempt": 2}', output_prefix="", connection=[]
    )
    resource = serve("get", request)
    assert resource.phase == wit.Phase.SUCCEEDED and resource.message == "done"
    assert [(l.name, l.uri, l.link_type) for l in resource.log_links] == [
        ("Console", "https://svc/jobs/j-1", wit.LinkType.DASHBOARD)
    ]
    outputs = {o.name: (json.loads(o.value), o.literal_type and json.loads(o.literal_type)) for o in resource.outputs}
    assert outputs["count"] == (3, None)
    assert outputs["ratio"] == (1.0, {"simple": "FLOAT"})
    assert outputs["when"][1] == {"simple": "DATETIME"}
    assert outputs["report"][0]["uri"] == "s3://b/r.csv"
    assert json.loads(resource.custom_info) == {"job": "j-1"}


@pytest.mark.parametrize(
    "behaviour,variant,message",
    [
        ("invalid", "Error_InvalidRequest", "cluster_id is missing"),
        ("retry", "Error_Retryable", "throttled"),
        ("503", "Error_Retryable", "POST https://svc/api answered 503: unavailable"),
        ("404", "Error_Failed", "POST https://svc/api answered 404: no such job"),
        ("bug", "Error_Failed", "KeyError: 'run_id'"),
        ("said", "Error_Failed", "the workspace refused the token"),
    ],
)
def test_exceptions_become_the_wit_error_the_client_should_see(
    wit, dispatch, serve, connector, behaviour, variant, message
):
    from componentize_py_types import Err

    connector.behaviour = behaviour
    with pytest.raises(Err) as raised:
        serve("create", create_request(wit, {}, {}))
    assert type(raised.value.value).__name__ == variant
    assert raised.value.value.value == message


def test_an_input_that_does_not_fit_its_type_is_an_invalid_request(wit, dispatch, serve, connector):
    from componentize_py_types import Err

    with pytest.raises(Err) as raised:
        serve("create", create_request(wit, {"n": "three"}, {"n": {"simple": "INTEGER"}}))
    assert isinstance(raised.value.value, wit.Error_InvalidRequest)
    assert raised.value.value.value.startswith("input 'n': ")


def test_a_meta_that_is_not_the_connectors_is_an_invalid_request(wit, dispatch, serve, connector):
    from componentize_py_types import Err

    request = wit.DeleteRequest(task_category=wit.TaskCategory("job", 2), resource_meta=b'{"run": 1}', connection=[])
    with pytest.raises(Err) as raised:
        serve("delete", request)
    assert isinstance(raised.value.value, wit.Error_InvalidRequest)
    assert "JobMeta" in raised.value.value.value


def test_metrics_and_logs_a_connector_lacks_are_not_implemented(wit, dispatch, serve, connector):
    from componentize_py_types import Err

    category = wit.TaskCategory("job", 2)
    with pytest.raises(Err) as raised:
        serve("get_metrics", wit.MetricsRequest(category, b'{"job_id": "j"}', ["cpu"], None, None, None, []))
    assert isinstance(raised.value.value, wit.Error_NotImplemented)
    with pytest.raises(Err) as raised:
        serve("get_logs", wit.LogsRequest(category, b'{"job_id": "j"}', 10, "", []))
    assert isinstance(raised.value.value, wit.Error_NotImplemented)


def test_a_meta_that_keeps_the_inputs_is_encoded_and_echoed(wit, dispatch, serve, monkeypatch):
    monkeypatch.setattr(_loop, "default_clock", NoClock)
    monkeypatch.delenv(dispatch.TASK_TYPE_VARIABLE, raising=False)
    ConnectorRegistry._clear()
    ConnectorRegistry.register(FlyteStyleEchoConnector())
    try:
        inputs = {"n": 3, "name": "flyte", "ids": [1, 2], "conf": {"a": 0.5}}
        types = {
            "n": {"simple": "INTEGER"},
            "name": {"simple": "STRING"},
            "ids": {"collectionType": {"simple": "INTEGER"}},
            "conf": {"mapValueType": {"simple": "FLOAT"}},
        }
        meta = serve("create", create_request(wit, inputs, types))
        # Byte for byte what flyte's ResourceMeta.encode writes for the same meta.
        assert meta == json.dumps({"job_id": "echo-n-name-ids-conf", "inputs": inputs}).encode()
        request = wit.GetRequest(
            task_category=wit.TaskCategory("echo", 0), resource_meta=meta, output_prefix="", connection=[]
        )
        resource = serve("get", request)
        assert resource.phase == wit.Phase.SUCCEEDED
        assert {o.name: json.loads(o.value) for o in resource.outputs} == inputs
    finally:
        ConnectorRegistry._clear()


NOT_RUN = {"not": "run"}


@pytest.mark.parametrize("key", ["task_template", "output_prefix", "inputs", "task_execution_metadata", "self"])
def test_a_connection_key_named_like_a_create_argument_is_an_invalid_request(wit, dispatch, serve, connector, key):
    from componentize_py_types import Err

    JobConnector.seen = NOT_RUN
    request = create_request(wit, {"n": 3}, {"n": {"simple": "INTEGER"}})
    request.connection = [("token", "s3cr3t"), (key, "v4lue")]
    with pytest.raises(Err) as raised:
        serve("create", request)
    assert isinstance(raised.value.value, wit.Error_InvalidRequest)
    assert raised.value.value.value == (
        f"connection key '{key}' clashes with create's argument of the same name (a connection's secrets and "
        "configs reach the connector as keyword arguments): rename the secret or config"
    )
    assert JobConnector.seen is NOT_RUN, "the connector's create ran"


@pytest.mark.parametrize("operation", ["get", "delete"])
@pytest.mark.parametrize("key", ["resource_meta", "self"])
def test_a_connection_key_named_like_the_meta_argument_is_an_invalid_request(
    wit, dispatch, serve, connector, operation, key
):
    from componentize_py_types import Err

    JobConnector.seen = NOT_RUN
    category = wit.TaskCategory("job", 2)
    meta = b'{"job_id": "j-1"}'
    connection = [(key, "v4lue"), ("token", "s3cr3t")]
    if operation == "get":
        request = wit.GetRequest(task_category=category, resource_meta=meta, output_prefix="", connection=connection)
    else:
        request = wit.DeleteRequest(task_category=category, resource_meta=meta, connection=connection)
    with pytest.raises(Err) as raised:
        serve(operation, request)
    assert isinstance(raised.value.value, wit.Error_InvalidRequest)
    assert raised.value.value.value == (
        f"connection key '{key}' clashes with {operation}'s argument of the same name (a connection's secrets "
        "and configs reach the connector as keyword arguments): rename the secret or config"
    )
    assert JobConnector.seen is NOT_RUN, f"the connector's {operation} ran"


def test_several_clashing_keys_are_named_together_and_no_value_is(wit, dispatch, serve, connector):
    from componentize_py_types import Err

    request = create_request(wit, {}, {})
    request.connection = [("inputs", "s3cr3t-1"), ("region", "eu"), ("output_prefix", "s3cr3t-2")]
    with pytest.raises(Err) as raised:
        serve("create", request)
    message = raised.value.value.value
    assert message.startswith(
        "connection keys 'inputs' and 'output_prefix' clash with create's arguments of the same names"
    ), message
    assert "s3cr3t" not in message


def test_other_connection_keys_reach_get_and_delete_as_keyword_arguments(wit, dispatch, serve, connector):
    category = wit.TaskCategory("job", 2)
    connection = [("token", "s3cr3t"), ("meta", "m")]
    serve("get", wit.GetRequest(category, b'{"job_id": "j-1"}', "", connection))
    assert JobConnector.seen["kwargs"] == {"token": "s3cr3t", "meta": "m"}
    assert JobConnector.seen["meta"] == JobMeta(job_id="j-1")
    serve("delete", wit.DeleteRequest(category, b'{"job_id": "j-2"}', connection))
    assert JobConnector.seen == dict(meta=JobMeta(job_id="j-2"), kwargs={"token": "s3cr3t", "meta": "m"})


def test_the_pods_credentials_reach_metrics_and_logs_as_keyword_arguments(wit, dispatch, serve, monkeypatch):
    monkeypatch.setattr(_loop, "default_clock", NoClock)
    seen = {}

    class Observed(JobConnector):
        async def get_metrics(self, resource_meta, queries, start_time=None, end_time=None, step=None, **kwargs):
            seen["metrics"] = kwargs
            return []

        async def get_logs(self, resource_meta, lines=0, token="", **kwargs):
            seen["logs"] = kwargs
            return LogsPage(lines=[])

    ConnectorRegistry._clear()
    ConnectorRegistry.register(Observed())
    try:
        category = wit.TaskCategory("job", 2)
        connection = [("ssh_private_key", "k")]
        meta = b'{"job_id": "j"}'
        serve("get_metrics", wit.MetricsRequest(category, meta, ["cpu"], None, None, None, connection))
        serve("get_logs", wit.LogsRequest(category, meta, 10, "", connection))
    finally:
        ConnectorRegistry._clear()
    assert seen == {"metrics": {"ssh_private_key": "k"}, "logs": {"ssh_private_key": "k"}}

"""The template views (`flyte_connector.template`): read like the protobuf
messages flyte connectors read. Where flyte and flyteidl2 are installed,
templates made by flyte's own task plugins are turned into proto3 JSON and
every field read through the view is compared with the protobuf message."""

# No `from __future__ import annotations`: flyte reads the task functions'
# annotations, which name modules imported inside the tests.

import copy
import datetime
import pickle
from pathlib import Path
from typing import Any

import pytest

from flyte_connector.template import Message, TaskExecutionMetadata, TaskTemplate
from flyte_connector.values import File, from_json

HERE = Path(__file__).resolve().parent

# The messages the views know the fields of: every field, set or not, reads
# as on the protobuf message.
KNOWN_MESSAGES = [
    "flyteidl2.core.TaskTemplate",
    "flyteidl2.core.Identifier",
    "flyteidl2.core.TaskMetadata",
    "flyteidl2.core.RuntimeMetadata",
    "flyteidl2.core.RetryStrategy",
    "flyteidl2.core.TypedInterface",
    "flyteidl2.core.VariableMap",
    "flyteidl2.core.VariableEntry",
    "flyteidl2.core.Variable",
    "flyteidl2.core.Container",
    "flyteidl2.core.KeyValuePair",
    "flyteidl2.core.Sql",
    "flyteidl2.core.K8sPod",
    "flyteidl2.core.K8sObjectMetadata",
    "flyteidl2.core.SecurityContext",
    "flyteidl2.core.Identity",
    "flyteidl2.core.OAuth2Client",
    "flyteidl2.core.Secret",
    "flyteidl2.core.OAuth2TokenRequest",
    "flyteidl2.connector.TaskExecutionMetadata",
    "flyteidl2.core.TaskExecutionIdentifier",
    "flyteidl2.core.NodeExecutionIdentifier",
    "flyteidl2.core.WorkflowExecutionIdentifier",
]

# Fields the view gives as plain values rather than views of messages.
AS_DICT = {"google.protobuf.Struct", "flyteidl2.core.LiteralType"}

TEMPLATE = {
    "id": {"resourceType": "TASK", "project": "p", "domain": "development", "name": "t", "version": "v1"},
    "type": "snowflake",
    "taskTypeVersion": 1,
    "metadata": {"runtime": {"type": "FLYTE_SDK", "version": "2.12.1"}, "timeout": "300s", "retries": {"retries": 3}},
    "interface": {
        "inputs": {
            "variables": [
                {"key": "n", "value": {"type": {"simple": "INTEGER"}, "description": "how many"}},
                {"key": "f", "value": {"type": {"blob": {"format": "csv"}}}},
            ]
        },
        "outputs": {"variables": [{"key": "o0", "value": {"type": {"structuredDatasetType": {"format": "parquet"}}}}]},
    },
    "custom": {"account": "a", "nested": {"n": 3.0}},
    "sql": {"statement": "select 1", "dialect": "ANSI"},
    "config": {"k": "v"},
}


# --------------------------------------------------------------------------------------
# The view on its own
# --------------------------------------------------------------------------------------


def test_fields_read_under_their_protobuf_names():
    template = TaskTemplate(TEMPLATE)
    assert template.type == "snowflake"
    assert template.task_type_version == 1
    assert template.id.name == "t" and template.id.project == "p" and template.id.resource_type == "TASK"
    assert template.sql.statement == "select 1"
    assert template.sql.dialect == "ANSI"
    assert template.metadata.runtime.version == "2.12.1"
    assert template.metadata.timeout == datetime.timedelta(seconds=300)
    assert template.metadata.retries.retries == 3
    assert template.custom == {"account": "a", "nested": {"n": 3.0}}
    assert template.config == {"k": "v"}
    entry = template.interface.inputs.variables[0]
    assert (entry.key, entry.value.type, entry.value.description) == ("n", {"simple": "INTEGER"}, "how many")


def test_unset_fields_read_as_protobuf_defaults():
    template = TaskTemplate(TEMPLATE)
    assert template.container.image == ""
    assert template.container.args == [] and template.container.env == []
    assert template.container.architecture == "UNKNOWN"
    assert template.security_context.run_as.k8s_service_account == ""
    assert template.metadata.tags == {}
    assert template.metadata.interruptible is False
    assert template.metadata.cache_max_age == datetime.timedelta(0)
    assert template.k8s_pod.pod_spec == {}
    assert template.worker_kind == "WORKER_KIND_UNSPECIFIED"
    assert template.interface.inputs.variables[1].value.description == ""
    empty = TaskTemplate({})
    assert empty.sql.statement == "" and empty.custom == {} and empty.interface.outputs.variables == []
    assert empty.input_types() == {} and empty.output_types() == {}


def test_has_field_tells_set_fields_apart():
    template = TaskTemplate(TEMPLATE)
    assert template.HasField("sql") and not template.HasField("container")
    assert template.metadata.HasField("timeout") and not template.metadata.HasField("cache_max_age")
    assert not TaskTemplate({}).HasField("metadata")
    with pytest.raises(ValueError, match='TaskTemplate has no field "sequel"'):
        template.HasField("sequel")


def test_unknown_fields_are_attribute_errors_naming_message_and_field():
    template = TaskTemplate(TEMPLATE)
    with pytest.raises(AttributeError, match="TaskTemplate has no field 'sequel'"):
        template.sequel  # noqa: B018
    with pytest.raises(AttributeError, match="Sql has no field 'query'"):
        template.sql.query  # noqa: B018
    with pytest.raises(AttributeError, match="TaskExecutionMetadata has no field 'name'"):
        TaskExecutionMetadata({}).name  # noqa: B018
    assert not hasattr(template, "_private")


def test_messages_without_a_schema_give_the_fields_they_set():
    template = TaskTemplate({"extendedResources": {"gpuAccelerator": {"device": "A100"}}, "reusePolicy": {}})
    assert template.extended_resources.gpu_accelerator.device == "A100"
    assert template.extended_resources.HasField("gpu_accelerator")
    with pytest.raises(AttributeError, match="ReusePolicy has no field 'min_replicas'"):
        template.reuse_policy.min_replicas  # noqa: B018
    assert TaskTemplate({}).extended_resources.to_dict() == {}


def test_the_view_is_read_only_and_hands_out_copies():
    data = {"custom": {"a": [1]}, "container": {"args": ["x"]}, "config": {"k": "v"}}
    template = TaskTemplate(data)
    template.custom["a"].append(2)
    template.container.args.append("y")
    template.config["k"] = "w"
    assert data == {"custom": {"a": [1]}, "container": {"args": ["x"]}, "config": {"k": "v"}}
    with pytest.raises(AttributeError, match="TaskTemplate is read-only"):
        template.type = "other"  # type: ignore[misc]
    assert template.to_dict() is data


def test_snake_case_keys_and_nulls_read_as_protobuf_parsers_read_them():
    template = TaskTemplate({"task_type_version": 2, "sql": None, "security_context": {"run_as": {"iam_role": "r"}}})
    assert template.task_type_version == 2
    assert template.security_context.run_as.iam_role == "r"
    assert template.sql.statement == "" and not template.HasField("sql")


def test_views_compare_and_print_by_their_json():
    assert TaskTemplate(TEMPLATE) == TaskTemplate(dict(TEMPLATE))
    assert TaskTemplate(TEMPLATE).sql == Message({"statement": "select 1", "dialect": "ANSI"}, "flyteidl2.core.Sql")
    assert TaskTemplate({}) != TaskExecutionMetadata({})
    assert repr(TaskTemplate({"type": "t"})) == "TaskTemplate({'type': 't'})"
    assert repr(TaskTemplate({}).sql) == "Message({}, 'flyteidl2.core.Sql')"
    with pytest.raises(TypeError, match="TaskTemplate must be a JSON object"):
        TaskTemplate('{"type": "t"}')  # type: ignore[arg-type]


def test_views_copy_and_pickle():
    template = TaskTemplate(TEMPLATE)
    copied = copy.deepcopy(template)
    assert copied == template and copied.to_dict() is not TEMPLATE
    assert type(copied) is TaskTemplate and copied.sql.statement == "select 1"
    assert pickle.loads(pickle.dumps(template.sql)) == template.sql


def test_interface_types_feed_from_json():
    template = TaskTemplate(TEMPLATE)
    assert template.input_types() == {"n": {"simple": "INTEGER"}, "f": {"blob": {"format": "csv"}}}
    assert template.output_types() == {"o0": {"structuredDatasetType": {"format": "parquet"}}}
    f = {"uri": "s3://b/f.csv", "format": "csv", "dimensionality": "SINGLE"}
    assert from_json(f, template.input_types()["f"]) == File("s3://b/f.csv", "csv")


def test_task_execution_metadata_reads_its_fields():
    metadata = TaskExecutionMetadata(
        {
            "namespace": "ns",
            "labels": {"a": "b"},
            "k8sServiceAccount": "sa",
            "maxAttempts": 3,
            "taskExecutionId": {"taskId": {"name": "t"}, "retryAttempt": 1},
            "identity": {"executionIdentity": "me"},
        }
    )
    assert metadata.namespace == "ns" and metadata.labels == {"a": "b"} and metadata.k8s_service_account == "sa"
    assert metadata.max_attempts == 3 and metadata.interruptible is False
    assert metadata.task_execution_id.task_id.name == "t"
    assert metadata.task_execution_id.retry_attempt == 1
    assert metadata.task_execution_id.node_execution_id.execution_id.project == ""
    assert metadata.identity.execution_identity == "me"
    assert metadata.environment_variables == {} and metadata.annotations == {}


# --------------------------------------------------------------------------------------
# Against flyteidl2's messages
# --------------------------------------------------------------------------------------


def protobuf() -> Any:
    """google.protobuf's json_format and symbol database, with flyteidl2's
    messages registered; skips the test without them."""
    pytest.importorskip("flyteidl2")
    json_format = pytest.importorskip("google.protobuf.json_format")
    for module in (
        "flyteidl2.core.tasks_pb2",
        "flyteidl2.core.security_pb2",
        "flyteidl2.core.identifier_pb2",
        "flyteidl2.connector.connector_pb2",
    ):
        pytest.importorskip(module)
    from google.protobuf import symbol_database

    return json_format, symbol_database.Default()


def assert_view_matches(view: Any, proto: Any, where: str) -> None:
    """Every field of `proto` reads the same through `view`: scalars equal,
    enums by name, Structs and literal types as `MessageToDict` gives them,
    durations as timedeltas, messages field by field."""
    descriptor = proto.DESCRIPTOR
    for field in descriptor.fields:
        name = f"{where}.{field.name}"
        got = getattr(view, field.name)
        expected = getattr(proto, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            assert got == dict(expected), name
        elif field.is_repeated and field.message_type is not None:
            assert len(got) == len(expected), name
            for i, (item_view, item) in enumerate(zip(got, expected)):
                assert_message_matches(item_view, item, f"{name}[{i}]")
        elif field.is_repeated:
            assert got == list(expected), name
        elif field.message_type is not None:
            assert view.HasField(field.name) == proto.HasField(field.name), name
            assert_message_matches(got, expected, name)
        elif field.enum_type is not None:
            assert got == field.enum_type.values_by_number[expected].name, name
        else:
            assert got == expected and type(got) is type(expected), name
        if field.containing_oneof is not None:
            assert view.HasField(field.name) == proto.HasField(field.name), name


def assert_message_matches(got: Any, expected: Any, where: str) -> None:
    from google.protobuf.json_format import MessageToDict

    full_name = expected.DESCRIPTOR.full_name
    if full_name in AS_DICT:
        assert got == MessageToDict(expected), where
    elif full_name == "google.protobuf.Duration":
        assert got == expected.ToTimedelta(), where
    elif full_name == "google.protobuf.BoolValue":
        assert got == expected.value, where
    elif full_name in KNOWN_MESSAGES:
        assert_view_matches(got, expected, where)
    else:
        assert isinstance(got, Message), where
        assert got.to_dict() == MessageToDict(expected), where


def check_template(proto: Any) -> TaskTemplate:
    json_format, _ = protobuf()
    template = TaskTemplate(json_format.MessageToDict(proto, preserving_proto_field_name=False))
    assert_view_matches(template, proto, "TaskTemplate")
    assert template.custom == json_format.MessageToDict(proto.custom)
    for types, variables in (
        (template.input_types(), proto.interface.inputs),
        (template.output_types(), proto.interface.outputs),
    ):
        assert types == {entry.key: json_format.MessageToDict(entry.value.type) for entry in variables.variables}
    return template


@pytest.mark.parametrize("full_name", KNOWN_MESSAGES)
def test_unset_fields_read_as_protobuf_defaults_for_every_known_message(full_name):
    _, database = protobuf()
    proto = database.GetSymbol(full_name)()
    assert_view_matches(Message({}, full_name), proto, full_name)


def test_a_populated_template_reads_as_its_protobuf_message():
    protobuf()
    from flyteidl2.core import identifier_pb2, interface_pb2, security_pb2, tasks_pb2, types_pb2
    from google.protobuf import struct_pb2

    secret = security_pb2.Secret(group="g", key="k", mount_requirement=security_pb2.Secret.FILE, env_var="E")
    client = security_pb2.OAuth2Client(client_id="c", client_secret=secret)
    pod_spec = struct_pb2.Struct()
    pod_spec.update({"containers": [{"name": "primary", "args": ["a"]}], "replicas": 2})
    custom = struct_pb2.Struct()
    custom.update({"conf": {"timeout_seconds": 3600, "flag": True, "none": None}, "list": [1, "x"]})
    proto = tasks_pb2.TaskTemplate(
        id=identifier_pb2.Identifier(
            resource_type=identifier_pb2.TASK, project="p", domain="d", name="n", version="v", org="o"
        ),
        type="k8s",
        task_type_version=3,
        metadata=tasks_pb2.TaskMetadata(
            discoverable=True,
            runtime=tasks_pb2.RuntimeMetadata(type=tasks_pb2.RuntimeMetadata.FLYTE_SDK, version="2", flavor="python"),
            discovery_version="dv",
            interruptible=True,
            tags={"team": "data"},
            cache_ignore_input_vars=["a", "b"],
            metadata=tasks_pb2.K8sObjectMetadata(labels={"l": "1"}, annotations={"a": "2"}),
            is_eager=True,
            code_bundle_uri="s3://bundle",
        ),
        interface=interface_pb2.TypedInterface(
            inputs=interface_pb2.VariableMap(
                variables=[
                    interface_pb2.VariableEntry(
                        key="xs",
                        value=interface_pb2.Variable(
                            type=types_pb2.LiteralType(collection_type=types_pb2.LiteralType(simple=types_pb2.FLOAT)),
                            description="floats",
                        ),
                    )
                ]
            )
        ),
        custom=custom,
        k8s_pod=tasks_pb2.K8sPod(pod_spec=pod_spec, primary_container_name="primary"),
        security_context=security_pb2.SecurityContext(
            run_as=security_pb2.Identity(
                iam_role="r", k8s_service_account="sa", oauth2_client=client, execution_identity="e"
            ),
            secrets=[secret, security_pb2.Secret(key="k2")],
            tokens=[security_pb2.OAuth2TokenRequest(name="t", client=client, token_endpoint="https://token")],
        ),
        extended_resources=tasks_pb2.ExtendedResources(gpu_accelerator=tasks_pb2.GPUAccelerator(device="A100")),
        config={"a": "b", "c": ""},
        reuse_policy=tasks_pb2.ReusePolicy(min_replicas=1, max_replicas=2),
        worker_kind=tasks_pb2.WorkerKind.Value("WORKER_KIND_SANDBOX"),
    )
    proto.metadata.retries.retries = 2
    proto.metadata.timeout.FromTimedelta(datetime.timedelta(minutes=90, microseconds=5))
    proto.metadata.cache_max_age.FromTimedelta(datetime.timedelta(days=1))
    proto.metadata.generates_deck.value = True
    proto.metadata.log_links.add(name="logs", uri="https://logs")
    template = check_template(proto)
    assert template.k8s_pod.pod_spec == {"containers": [{"name": "primary", "args": ["a"]}], "replicas": 2.0}
    assert template.metadata.timeout == datetime.timedelta(minutes=90, microseconds=5)
    assert template.metadata.log_links[0].uri == "https://logs"


def test_task_execution_metadata_reads_as_its_protobuf_message():
    json_format, _ = protobuf()
    from flyteidl2.connector import connector_pb2
    from flyteidl2.core import identifier_pb2, security_pb2

    proto = connector_pb2.TaskExecutionMetadata(
        task_execution_id=identifier_pb2.TaskExecutionIdentifier(
            task_id=identifier_pb2.Identifier(resource_type=identifier_pb2.TASK, project="p", name="t", version="v"),
            node_execution_id=identifier_pb2.NodeExecutionIdentifier(
                node_id="n0",
                execution_id=identifier_pb2.WorkflowExecutionIdentifier(project="p", domain="d", name="run"),
            ),
            retry_attempt=2,
        ),
        namespace="p-d",
        labels={"l": "1"},
        annotations={"a": "2"},
        k8s_service_account="sa",
        environment_variables={"FOO": "bar"},
        max_attempts=4,
        interruptible=True,
        interruptible_failure_threshold=2,
        identity=security_pb2.Identity(execution_identity="me"),
    )
    view = TaskExecutionMetadata(json_format.MessageToDict(proto))
    assert_view_matches(view, proto, "TaskExecutionMetadata")
    assert_view_matches(TaskExecutionMetadata({}), connector_pb2.TaskExecutionMetadata(), "TaskExecutionMetadata")


# Templates made by flyte's own task plugins. Their task functions must live
# in a file under the serialization root (this folder) for flyte's resolver.


def plugin_template(task: Any) -> Any:
    """The TaskTemplate flyte registers for `task`, as tests/python/conftest.py makes it."""
    from flyte._internal.runtime.task_serde import get_proto_task
    from flyte.models import SerializationContext

    context = SerializationContext(version="v1", project="p", domain="development", org="o", root_dir=HERE)
    return get_proto_task(task, context)


def test_a_databricks_template_reads_as_its_protobuf_message():
    protobuf()
    flyte = pytest.importorskip("flyte")
    databricks = pytest.importorskip("flyteplugins.databricks")
    env = flyte.TaskEnvironment(
        name="view-databricks",
        image=flyte.Image.from_base("ghcr.io/flyteorg/databricks-task:v1"),
        env_vars={"MODE": "test"},
        secrets=[flyte.Secret(key="api-key", as_env_var="API_KEY")],
        plugin_config=databricks.Databricks(
            spark_conf={"spark.driver.memory": "1000M"},
            databricks_conf={"run_name": "r", "new_cluster": {"num_workers": 2}, "timeout_seconds": 3600},
            databricks_instance="myorg.cloud.databricks.com",
            databricks_token="databricks-token",
        ),
    )

    def scale(x: int, factor: float, f: flyte.io.File | None = None) -> list[float]:
        return [x * factor]

    proto = plugin_template(env.task(scale, retries=2, timeout=datetime.timedelta(minutes=5)))
    template = check_template(proto)
    assert template.HasField("container") and not template.HasField("sql")
    assert template.container.env[0].key == "MODE"
    assert template.custom["databricksConf"]["timeout_seconds"] == 3600.0
    assert template.metadata.timeout == datetime.timedelta(minutes=5)
    assert template.security_context.secrets[0].env_var == "API_KEY"
    assert template.output_types() == {"o0": {"collectionType": {"simple": "FLOAT"}}}


def test_a_snowflake_template_reads_as_its_protobuf_message():
    protobuf()
    flyte_io = pytest.importorskip("flyte.io")
    snowflake = pytest.importorskip("flyteplugins.snowflake")
    task = snowflake.Snowflake(
        name="view_snowflake",
        query_template="select * from t where id = %(id)s and at < %(at)s",
        plugin_config=snowflake.SnowflakeConfig(
            account="acct", database="db", schema="PUBLIC", warehouse="wh", user="u", connection_kwargs={"role": "r"}
        ),
        inputs={"id": int, "at": datetime.datetime},
        output_dataframe_type=flyte_io.DataFrame,
        snowflake_private_key="sf-key",
    )
    template = check_template(plugin_template(task))
    assert template.type == "snowflake"
    assert template.sql.statement.startswith("select * from t")
    assert template.container.image == "" and not template.HasField("container")
    assert template.input_types() == {"id": {"simple": "INTEGER"}, "at": {"simple": "DATETIME"}}

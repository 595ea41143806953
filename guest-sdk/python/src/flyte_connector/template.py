"""The task template and task execution metadata, read as flyte connectors
read the protobuf messages.

The host sends `flyteidl2.core.TaskTemplate` and
`flyteidl2.connector.TaskExecutionMetadata` as proto3 JSON (lowerCamelCase
keys, only the fields that are set). `TaskTemplate` and
`TaskExecutionMetadata` wrap that JSON in read-only views with the
protobuf's attribute names: `task_template.sql.statement`,
`task_template.container.env[0].key`, `task_template.metadata.runtime.version`.
A field that is not set reads as the protobuf's default ("" for strings, 0,
False, [] for repeated fields, {} for maps, an empty view for a message), so
`task_template.sql.statement == ""` for a template without SQL.

Where the view differs from the protobuf classes:

- `google.protobuf.Struct` fields (`custom`, `k8s_pod.pod_spec`) and
  literal types (`Variable.type`) are plain dicts: what flyte's
  `json_format.MessageToDict` gives, and what `values.from_json` takes.
- `google.protobuf.Duration` fields (`metadata.timeout`) are `timedelta`s.
- Enum fields are their names (`"FLYTE_SDK"`, `"ENV_VAR"`), not numbers.
- Messages this module has no schema for (`metadata.log_links`,
  `extended_resources`, ...) are views too, but only of the fields they set.
"""

from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any, Dict, NamedTuple, Tuple

from flyte_connector.values import from_json

__all__ = ["Message", "TaskExecutionMetadata", "TaskTemplate"]


class _Field(NamedTuple):
    """How a field reads: `kind` is one of "scalar" (`arg` is the default),
    "enum" (`arg` is the name of the zero value), "message" (`arg` is the
    message's full name), "repeated" (`arg` is the element message's full
    name, or None for scalars), "map" (string values), "struct" (a plain
    dict) or "duration" (a `timedelta`)."""

    kind: str
    arg: Any = None


_STRUCT = _Field("struct")
_MAP = _Field("map")
_DURATION = _Field("duration")
_STRINGS = _Field("repeated")


def _message(name: str) -> _Field:
    return _Field("message", name)


def _repeated(name: str) -> _Field:
    return _Field("repeated", name)


def _enum(zero: str) -> _Field:
    return _Field("enum", zero)


# The fields of the messages a connector reads, by protobuf field name.
# A plain value is a scalar field and its default.
_SCHEMAS: Dict[str, Dict[str, Any]] = {
    "flyteidl2.core.TaskTemplate": {
        "id": _message("flyteidl2.core.Identifier"),
        "type": "",
        "metadata": _message("flyteidl2.core.TaskMetadata"),
        "interface": _message("flyteidl2.core.TypedInterface"),
        "custom": _STRUCT,
        "container": _message("flyteidl2.core.Container"),
        "k8s_pod": _message("flyteidl2.core.K8sPod"),
        "sql": _message("flyteidl2.core.Sql"),
        "task_type_version": 0,
        "security_context": _message("flyteidl2.core.SecurityContext"),
        "extended_resources": _message("flyteidl2.core.ExtendedResources"),
        "config": _MAP,
        "reuse_policy": _message("flyteidl2.core.ReusePolicy"),
        "worker_kind": _enum("WORKER_KIND_UNSPECIFIED"),
    },
    "flyteidl2.core.Identifier": {
        "resource_type": _enum("UNSPECIFIED"),
        "project": "",
        "domain": "",
        "name": "",
        "version": "",
        "org": "",
    },
    "flyteidl2.core.TaskMetadata": {
        "discoverable": False,
        "runtime": _message("flyteidl2.core.RuntimeMetadata"),
        "timeout": _DURATION,
        "retries": _message("flyteidl2.core.RetryStrategy"),
        "discovery_version": "",
        "deprecated_error_message": "",
        "interruptible": False,
        "cache_serializable": False,
        "tags": _MAP,
        "pod_template_name": "",
        "cache_ignore_input_vars": _STRINGS,
        "is_eager": False,
        # A google.protobuf.BoolValue, which proto3 JSON writes as a bool.
        "generates_deck": False,
        "metadata": _message("flyteidl2.core.K8sObjectMetadata"),
        "debuggable": False,
        "log_links": _repeated("flyteidl2.core.TaskLog"),
        "image_build_run": _message("flyteidl2.common.RunIdentifier"),
        "is_entrypoint": False,
        "code_bundle_uri": "",
        "timeouts": _message("flyteidl2.core.TimeoutStrategy"),
        "produces_artifacts": False,
        "cache_max_age": _DURATION,
    },
    "flyteidl2.core.RuntimeMetadata": {"type": _enum("OTHER"), "version": "", "flavor": ""},
    "flyteidl2.core.RetryStrategy": {"retries": 0, "backoff": _message("flyteidl2.core.Backoff")},
    "flyteidl2.core.TypedInterface": {
        "inputs": _message("flyteidl2.core.VariableMap"),
        "outputs": _message("flyteidl2.core.VariableMap"),
    },
    "flyteidl2.core.VariableMap": {"variables": _repeated("flyteidl2.core.VariableEntry")},
    "flyteidl2.core.VariableEntry": {"key": "", "value": _message("flyteidl2.core.Variable")},
    "flyteidl2.core.Variable": {
        # A LiteralType, kept as proto3 JSON for `values.from_json`.
        "type": _STRUCT,
        "description": "",
        "artifact_partial_id": _message("flyteidl2.core.ArtifactID"),
        "artifact_tag": _message("flyteidl2.core.ArtifactTag"),
    },
    "flyteidl2.core.Container": {
        "image": "",
        "command": _STRINGS,
        "args": _STRINGS,
        "resources": _message("flyteidl2.core.Resources"),
        "env": _repeated("flyteidl2.core.KeyValuePair"),
        "config": _repeated("flyteidl2.core.KeyValuePair"),
        "ports": _repeated("flyteidl2.core.ContainerPort"),
        "data_config": _message("flyteidl2.core.DataLoadingConfig"),
        "architecture": _enum("UNKNOWN"),
    },
    "flyteidl2.core.KeyValuePair": {"key": "", "value": ""},
    "flyteidl2.core.Sql": {"statement": "", "dialect": _enum("UNDEFINED")},
    "flyteidl2.core.K8sPod": {
        "metadata": _message("flyteidl2.core.K8sObjectMetadata"),
        "pod_spec": _STRUCT,
        "data_config": _message("flyteidl2.core.DataLoadingConfig"),
        "primary_container_name": "",
    },
    "flyteidl2.core.K8sObjectMetadata": {"labels": _MAP, "annotations": _MAP},
    "flyteidl2.core.SecurityContext": {
        "run_as": _message("flyteidl2.core.Identity"),
        "secrets": _repeated("flyteidl2.core.Secret"),
        "tokens": _repeated("flyteidl2.core.OAuth2TokenRequest"),
    },
    "flyteidl2.core.Identity": {
        "iam_role": "",
        "k8s_service_account": "",
        "oauth2_client": _message("flyteidl2.core.OAuth2Client"),
        "execution_identity": "",
    },
    "flyteidl2.core.OAuth2Client": {"client_id": "", "client_secret": _message("flyteidl2.core.Secret")},
    "flyteidl2.core.Secret": {
        "group": "",
        "group_version": "",
        "key": "",
        "mount_requirement": _enum("ANY"),
        "env_var": "",
    },
    "flyteidl2.core.OAuth2TokenRequest": {
        "name": "",
        "type": _enum("CLIENT_CREDENTIALS"),
        "client": _message("flyteidl2.core.OAuth2Client"),
        "idp_discovery_endpoint": "",
        "token_endpoint": "",
    },
    "flyteidl2.connector.TaskExecutionMetadata": {
        "task_execution_id": _message("flyteidl2.core.TaskExecutionIdentifier"),
        "namespace": "",
        "labels": _MAP,
        "annotations": _MAP,
        "k8s_service_account": "",
        "environment_variables": _MAP,
        "max_attempts": 0,
        "interruptible": False,
        "interruptible_failure_threshold": 0,
        "identity": _message("flyteidl2.core.Identity"),
    },
    "flyteidl2.core.TaskExecutionIdentifier": {
        "task_id": _message("flyteidl2.core.Identifier"),
        "node_execution_id": _message("flyteidl2.core.NodeExecutionIdentifier"),
        "retry_attempt": 0,
    },
    "flyteidl2.core.NodeExecutionIdentifier": {
        "node_id": "",
        "execution_id": _message("flyteidl2.core.WorkflowExecutionIdentifier"),
    },
    "flyteidl2.core.WorkflowExecutionIdentifier": {"project": "", "domain": "", "name": "", "org": ""},
}


def _json_name(field: str) -> str:
    """The proto3 JSON name of a field: `k8s_service_account` -> `k8sServiceAccount`."""
    head, *rest = field.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


class Message:
    """A read-only view of a protobuf message given as proto3 JSON.

    Fields read as attributes under their protobuf names (snake_case) and
    are looked up under their JSON names (lowerCamelCase; the snake_case name
    is accepted too). Nested messages, and lists of them, are views as well.
    For a message of known type (`message_type`, its full protobuf name such
    as `"flyteidl2.core.Sql"`) a field that is not set reads as the
    protobuf's default; any other missing field raises `AttributeError`.
    """

    __slots__ = ("_data", "_type")

    def __init__(self, data: Dict[str, Any], message_type: str = "") -> None:
        if not isinstance(data, dict):
            raise TypeError(f"{_short(message_type)} must be a JSON object (a dict), got {type(data).__name__}")
        object.__setattr__(self, "_data", data)
        object.__setattr__(self, "_type", message_type)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        field = _SCHEMAS.get(self._type, {}).get(name)
        present, value = self._lookup(name)
        if present:
            return _read(value, field)
        if field is None:
            raise AttributeError(f"{_short(self._type)} has no field {name!r}")
        return _default(field)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{_short(self._type)} is read-only")

    def HasField(self, name: str) -> bool:  # noqa: N802 (the protobuf's name)
        """Whether the field is set (present in the JSON), as protobuf's
        `HasField`. `ValueError` for a name that is no field of a message of
        known type (for others, any name is answered)."""
        if self._type in _SCHEMAS and name not in _SCHEMAS[self._type]:
            raise ValueError(f'{_short(self._type)} has no field "{name}"')
        return self._lookup(name)[0]

    def to_dict(self) -> Dict[str, Any]:
        """The message as the proto3 JSON it was made from (not a copy)."""
        return self._data

    def _lookup(self, name: str) -> Tuple[bool, Any]:
        for key in (_json_name(name), name):
            if self._data.get(key) is not None:  # proto3 JSON's null is "not set"
                return True, self._data[key]
        return False, None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return self._type == other._type and self._data == other._data

    __hash__ = None  # type: ignore[assignment]  (a view of mutable JSON)

    def __reduce__(self) -> Tuple[Any, ...]:
        # Copies and pickles are made without __setattr__, which refuses.
        return _rebuild, (type(self), self._data, self._type)

    def __repr__(self) -> str:
        if type(self) is Message:
            return f"Message({self._data!r}, {self._type!r})"
        return f"{type(self).__name__}({self._data!r})"


def _rebuild(cls: type, data: Dict[str, Any], message_type: str) -> Message:
    view = object.__new__(cls)
    Message.__init__(view, data, message_type)
    return view


def _short(message_type: str) -> str:
    return message_type.rsplit(".", 1)[-1] or "message"


def _read(value: Any, field: Any) -> Any:
    """A present field's value, as the view gives it (`field` is its schema
    entry, None for a field of a message of unknown type)."""
    if not isinstance(field, _Field) and field is not None:
        return value  # a scalar
    if field is None or field.kind in ("message", "repeated"):
        message_type = field.arg if field is not None and field.arg else ""
        if isinstance(value, dict):
            return Message(value, message_type)
        if isinstance(value, list):
            return [Message(item, message_type) if isinstance(item, dict) else item for item in value]
        return value
    if field.kind == "duration":
        return from_json(value, {"simple": "DURATION"})
    return copy.deepcopy(value)  # a struct, a map or an enum's name


def _default(field: Any) -> Any:
    """A field's value when it is not set: the protobuf's default."""
    if not isinstance(field, _Field):
        return field
    if field.kind == "enum":
        return field.arg
    if field.kind == "message":
        return Message({}, field.arg)
    if field.kind == "repeated":
        return []
    if field.kind == "duration":
        return timedelta(0)
    return {}


class TaskTemplate(Message):
    """A `flyteidl2.core.TaskTemplate`, from its proto3 JSON: what a flyte
    connector's `create` receives as `task_template`. See `Message` for how
    fields read."""

    __slots__ = ()

    def __init__(self, data: Dict[str, Any]) -> None:
        super().__init__(data, "flyteidl2.core.TaskTemplate")

    def input_types(self) -> Dict[str, Dict[str, Any]]:
        """The type of each input the interface declares: name -> LiteralType
        as proto3 JSON (e.g. `{"simple": "INTEGER"}`)."""
        return _types(self.interface.inputs)

    def output_types(self) -> Dict[str, Dict[str, Any]]:
        """The type of each output the interface declares: name -> LiteralType
        as proto3 JSON; `Typed(value, output_types()[name])` returns an output
        exactly as declared."""
        return _types(self.interface.outputs)


class TaskExecutionMetadata(Message):
    """A `flyteidl2.connector.TaskExecutionMetadata`, from its proto3 JSON:
    what a flyte connector's `create` receives as `task_execution_metadata`
    (namespace, labels, annotations, service account, environment variables,
    attempts, identity). See `Message` for how fields read."""

    __slots__ = ()

    def __init__(self, data: Dict[str, Any]) -> None:
        super().__init__(data, "flyteidl2.connector.TaskExecutionMetadata")


def _types(variables: Message) -> Dict[str, Dict[str, Any]]:
    return {entry.key: entry.value.type for entry in variables.variables}

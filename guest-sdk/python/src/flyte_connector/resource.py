"""What a connector returns: the resource meta `create` stores, the
resource `get` reports, and the log links shown beside the task."""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Self, Tuple

from flyte_connector.phases import Phase


class ResourceMeta:
    """What `create` remembers about a job, handed back to `get` and
    `delete`. Subclass it as a dataclass; it is stored as
    `json.dumps(asdict(meta))` in UTF-8, byte for byte as flyte stores it."""

    def encode(self) -> bytes:
        """The meta's bytes, as flyte's `ResourceMeta.encode` writes them."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} must be a dataclass to be encoded")
        # What `asdict` would make, without its deep copy: dataclasses met
        # at any depth become dicts of their fields as json writes them.
        return json.dumps(self, default=_fields_of).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """The meta of `data`; fields that are dataclasses are rebuilt, as
        flyte's `dataclass_from_dict` rebuilds them."""
        return _dataclass_from_dict(cls, json.loads(data.decode("utf-8")))


def _fields_of(value: Any) -> Dict[str, Any]:
    """A dataclass met while encoding a meta, as the dict `asdict` makes of
    it (json encodes its values in turn); anything else json cannot write
    fails as json fails it."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {name: getattr(value, name) for name in _field_names(type(value))}
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


@functools.cache
def _field_names(cls: type) -> Tuple[str, ...]:
    return tuple(field.name for field in dataclasses.fields(cls))


@functools.cache
def _field_types(cls: type) -> Dict[str, Optional[type]]:
    """The fields of dataclass `cls`: name → the dataclass a field holds
    (rebuilt from its dict), or None. Read once per class: resolving type
    hints is most of what decoding a small meta costs."""
    hints = typing.get_type_hints(cls)
    types = {}
    for field in dataclasses.fields(cls):
        declared = hints.get(field.name, field.type)
        types[field.name] = declared if dataclasses.is_dataclass(declared) else None
    return types


def _dataclass_from_dict(cls: type, values: Dict[str, Any]) -> Any:
    fields = _field_types(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{cls.__name__} has no field {', '.join(unknown)}")
    return cls(
        **{
            name: value if fields[name] is None else _dataclass_from_dict(fields[name], value)
            for name, value in values.items()
        }
    )


@dataclass
class TaskLog:
    """A link shown beside the task in the Flyte UI, with the field names
    and defaults of `flyteidl2.core.TaskLog` (its `ShowWhilePending` and
    `HideOnceFinished` included, spelled as the protobuf spells them);
    `TaskLog.DASHBOARD` and the other link types are class attributes, as
    on the protobuf class."""

    EXTERNAL: typing.ClassVar[int] = 0
    DASHBOARD: typing.ClassVar[int] = 1
    IDE: typing.ClassVar[int] = 2

    uri: str = ""
    name: str = ""
    ready: bool = False
    icon_uri: str = ""
    ShowWhilePending: bool = False  # noqa: N815 (the protobuf's name)
    HideOnceFinished: bool = False  # noqa: N815 (the protobuf's name)
    link_type: int = EXTERNAL


@dataclass
class Resource:
    """The state of a job on the external service, as `get` reports it:
    `flyte.connectors.Resource`. `outputs` are Python values, converted to
    Flyte literals by the host; `custom_info` becomes a protobuf Struct."""

    phase: Phase
    message: Optional[str] = None
    log_links: Optional[List[TaskLog]] = None
    outputs: Optional[Dict[str, Any]] = None
    custom_info: Optional[Dict[str, Any]] = None

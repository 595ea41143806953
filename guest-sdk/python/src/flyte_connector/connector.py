"""The connector base class and its registry, shaped as `flyte.connectors`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Type

from flyte_connector.resource import Resource, ResourceMeta
from flyte_connector.values import Inputs


@dataclass
class MetricResult:
    """One metric series for `get_metrics`: `data` is any JSON object."""

    metric: str
    data: Dict[str, Any]


@dataclass
class LogsPage:
    """A page of log lines for `get_logs`; `next_token` is empty on the last page."""

    lines: List[str]
    next_token: str = ""


class AsyncConnector:
    """A connector: subclass it, set the class attributes and implement
    `create`, `get` and `delete` as coroutines.

    Connection secrets and configs (the task's `connection`) arrive as
    keyword arguments of every call, as in flyte. `get` and `delete` receive
    the meta `create` returned, decoded as `metadata_type`.
    """

    #: Display name, e.g. "Databricks Connector".
    name: str = ""
    #: The task type served, e.g. "spark" (the template's `type`).
    task_type_name: str = ""
    #: The task type's version.
    task_type_version: int = 0
    #: The `ResourceMeta` dataclass `create` returns.
    metadata_type: Type[ResourceMeta] = ResourceMeta

    async def create(
        self,
        task_template: Any,
        output_prefix: str,
        inputs: Optional[Inputs] = None,
        task_execution_metadata: Any = None,
        **kwargs: Any,
    ) -> ResourceMeta:
        """Starts the task; returns what `get` and `delete` need to find it.

        `inputs` is an `Inputs`: a dict of input name → Python value typed
        from the template's interface, with the JSON the host sent and each
        input's literal type as `inputs.json` and `inputs.types`."""
        raise NotImplementedError

    async def get(self, resource_meta: ResourceMeta, **kwargs: Any) -> Resource:
        """Reports the task's phase and, once it has them, its outputs."""
        raise NotImplementedError

    async def delete(self, resource_meta: ResourceMeta, **kwargs: Any) -> None:
        """Cancels the task. Called again for a task already gone, it should succeed."""
        raise NotImplementedError

    async def get_metrics(
        self,
        resource_meta: ResourceMeta,
        queries: List[str],
        start_time: Optional[str] = None,
        end_time: Optional[str] = None,
        step: Optional[str] = None,
        **kwargs: Any,
    ) -> List[MetricResult]:
        """Optional: the task's metrics (times as RFC 3339, `step` as "60s")."""
        raise NotImplementedError

    async def get_logs(self, resource_meta: ResourceMeta, lines: int = 0, token: str = "", **kwargs: Any) -> LogsPage:
        """Optional: a page of the task's logs (`lines` 0: as many as the connector likes)."""
        raise NotImplementedError


class ConnectorRegistry:
    """Where a connector module registers its connector, at module level:
    `ConnectorRegistry.register(MyConnector())`. A component serves one
    connector."""

    _connector: Optional[AsyncConnector] = None

    @classmethod
    def register(cls, connector: AsyncConnector, override: bool = False) -> None:
        """Registers the component's connector, checking its declaration."""
        if not isinstance(connector, AsyncConnector):
            raise TypeError(
                f"ConnectorRegistry.register takes an AsyncConnector instance, not {type(connector).__name__}"
            )
        kind = type(connector).__name__
        if not connector.name or not isinstance(connector.name, str):
            raise ValueError(f"{kind} must set `name` (the connector's display name)")
        if not connector.task_type_name or not isinstance(connector.task_type_name, str):
            raise ValueError(f"{kind} must set `task_type_name` (the task type it serves)")
        if not isinstance(connector.task_type_version, int):
            raise ValueError(f"{kind}.task_type_version must be an int")
        meta_type = connector.metadata_type
        if not (isinstance(meta_type, type) and issubclass(meta_type, ResourceMeta) and dataclasses.is_dataclass(meta_type)):
            raise ValueError(f"{kind}.metadata_type must be a dataclass subclassing ResourceMeta")
        for method in ("create", "get", "delete"):
            if getattr(type(connector), method) is getattr(AsyncConnector, method):
                raise ValueError(f"{kind} must implement `async def {method}`")
        if cls._connector is not None and not override:
            raise ValueError(
                f"a component serves one connector: {type(cls._connector).__name__} is already registered, "
                f"so {kind} cannot be"
            )
        cls._connector = connector

    @classmethod
    def get_connector(cls) -> AsyncConnector:
        """The registered connector."""
        if cls._connector is None:
            raise LookupError(
                "no connector is registered: call ConnectorRegistry.register(MyConnector()) at module level"
            )
        return cls._connector

    @classmethod
    def _clear(cls) -> None:
        cls._connector = None

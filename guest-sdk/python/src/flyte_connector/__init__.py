"""Write Flyte connectors in Python, with the shape of `flyte.connectors`.

A Flyte connector ports by changing its imports and its HTTP calls:

    from flyte_connector import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta, http

The resource meta, the resource, log links and phases are those of
`flyte.connectors` and `flyteidl2`, with the same fields, defaults and
encodings, so resource metas move between flyte's Python server and
flyte-connect. `flyte-connector build my_connector.py` turns the module
into a WebAssembly component (see `flyte_connector.build`): by default one
whose instances may serve several calls of a tenant at once, each waiting
on HTTP or `asyncio.sleep` while the others run; `--sync` builds one that
serves a call at a time, for a connector not safe to run concurrently.
"""

from flyte_connector import cache, http
from flyte_connector.connector import AsyncConnector, ConnectorRegistry, LogsPage, MetricResult
from flyte_connector.errors import ConnectorError, InvalidRequest, Retryable
from flyte_connector.phases import Phase, TaskExecution, convert_to_flyte_phase, is_terminal_phase
from flyte_connector.resource import Resource, ResourceMeta, TaskLog
from flyte_connector.template import TaskExecutionMetadata, TaskTemplate
from flyte_connector.values import DataFrame, Dir, File, Typed, from_json, to_json

__all__ = [
    "AsyncConnector",
    "ConnectorError",
    "ConnectorRegistry",
    "DataFrame",
    "Dir",
    "File",
    "InvalidRequest",
    "LogsPage",
    "MetricResult",
    "Phase",
    "Resource",
    "ResourceMeta",
    "Retryable",
    "TaskExecution",
    "TaskExecutionMetadata",
    "TaskLog",
    "TaskTemplate",
    "Typed",
    "cache",
    "convert_to_flyte_phase",
    "from_json",
    "http",
    "is_terminal_phase",
    "to_json",
]

"""The export of the async world (what `flyte-connector build` builds by
default): `flyte:connector/async-connector`, whose calls the host may run
several at once in one instance. Each call awaits its `_dispatch` coroutine
as its own task (`_async_loop.serve`); its waits go through the contract's
`waits` (HTTP in `http`, timers in `_async_loop`), its output through
`waits.log` (`_call_log`).

Importing it completes componentize-py's event loop and points the standard
streams at the calls' logs, so the build imports it before the connector's
module. Only importable inside a component build (componentize-py generates
`wit_world`).
"""

from typing import List

import componentize_py_async_support  # noqa: F401 (the loop `_async_loop` completes)
from wit_world import exports
from wit_world.imports import connector_types as wit

# Only modules imported while the component is built exist in it. The SDK
# imports these when first used, so load them now.
from wit_world.imports import (  # noqa: F401
    connector_call,
    connector_http_retries,
    connector_waits,
    monotonic_clock,
)

from flyte_connector import _async_loop, _call_log, _dispatch


class AsyncConnector(exports.AsyncConnector):
    """Every call of the WIT interface, served by the registered connector."""

    def metadata(self) -> wit.Metadata:
        _call_log.serving()
        return _dispatch.metadata(wit)

    # Each awaits `_async_loop.serve` itself: a coroutine between them
    # would be one more frame made and torn down in every call.
    async def create(self, request: wit.CreateRequest) -> bytes:
        _call_log.serving()
        return await _async_loop.serve(_dispatch.create(wit, request))

    async def get(self, request: wit.GetRequest) -> wit.Resource:
        _call_log.serving()
        return await _async_loop.serve(_dispatch.get(wit, request))

    async def delete(self, request: wit.DeleteRequest) -> None:
        _call_log.serving()
        await _async_loop.serve(_dispatch.delete(wit, request))

    async def get_metrics(self, request: wit.MetricsRequest) -> List[wit.MetricResult]:
        _call_log.serving()
        return await _async_loop.serve(_dispatch.get_metrics(wit, request))

    async def get_logs(self, request: wit.LogsRequest) -> wit.LogsPage:
        _call_log.serving()
        return await _async_loop.serve(_dispatch.get_logs(wit, request))


_async_loop.install()
_call_log.install()

"""The export of the sync world (`flyte-connector build --sync`):
`flyte:connector/connector`, implemented by running each call's
`_dispatch` coroutine on a fresh `_loop.PollLoop`, with the generated WIT
types.

Only importable inside a component build (componentize-py generates
`wit_world`); `flyte-connector build` imports it into the app module.
"""

from typing import List

from wit_world import exports
from wit_world.imports import connector_types as wit

# Only modules imported while the component is built exist in it. The event
# loop and the HTTP client import these when first used, so load them now.
from wit_world.imports import (  # noqa: F401
    connector_call,
    connector_http_retries,
    monotonic_clock,
    outgoing_handler,
    poll,
    streams,
    wasi_http_types,
)

from flyte_connector import _dispatch


class Connector(exports.Connector):
    """Every call of the WIT interface, served by the registered connector."""

    def metadata(self) -> wit.Metadata:
        return _dispatch.metadata(wit)

    def create(self, request: wit.CreateRequest) -> bytes:
        return _dispatch.run(_dispatch.create(wit, request))

    def get(self, request: wit.GetRequest) -> wit.Resource:
        return _dispatch.run(_dispatch.get(wit, request))

    def delete(self, request: wit.DeleteRequest) -> None:
        _dispatch.run(_dispatch.delete(wit, request))

    def get_metrics(self, request: wit.MetricsRequest) -> List[wit.MetricResult]:
        return _dispatch.run(_dispatch.get_metrics(wit, request))

    def get_logs(self, request: wit.LogsRequest) -> wit.LogsPage:
        return _dispatch.run(_dispatch.get_logs(wit, request))

"""Calls from the host to the registered connector, in either world.

Each exported WIT function lands here with its request record and gets
the call's coroutine (`create(wit, request)`, ...): the request becomes
flyte's arguments (a template view, Python input values, the meta decoded,
connection values as keyword arguments), the connector's coroutine is
awaited, and what it returns or raises becomes the WIT result (a WIT error
raised as `Err`). The sync world's export (`_guest`) runs that coroutine on
a fresh `PollLoop` (`run`); the async world's (`_guest_async`) awaits it as
the call's own task. `wit` is the generated `connector_types` module; the
guests pass it, and the tests pass bindings generated for CPython.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import traceback
from typing import Any, Awaitable, Dict, List, Tuple, TypeVar

from componentize_py_types import Err

from flyte_connector import _loop, errors, http, retry
from flyte_connector._version import VERSION
from flyte_connector.connector import AsyncConnector, ConnectorRegistry, LogsPage
from flyte_connector.resource import Resource, ResourceMeta
from flyte_connector.template import TaskExecutionMetadata, TaskTemplate
from flyte_connector.values import Inputs, from_json, to_json

T = TypeVar("T")


#: The arguments of `create` besides the connection's keys, which the SDK
#: passes as keyword arguments too, as flyte does: a connection key of one
#: of these names fails the call (INVALID_ARGUMENT) rather than colliding.
CREATE_ARGUMENTS = ("self", "task_template", "output_prefix", "inputs", "task_execution_metadata")
#: Likewise for `get` and `delete` (the meta, under the name flyte passes it by).
META_ARGUMENTS = ("self", "resource_meta")
#: Likewise for `get_metrics` and `get_logs`.
METRICS_ARGUMENTS = ("self", "resource_meta", "queries", "start_time", "end_time", "step")
LOGS_ARGUMENTS = ("self", "resource_meta", "lines", "token")

#: The SDK and its version, as components report them to the host.
SDK = f"flyte-connector-sdk {VERSION} (Python)"


#: Environment variable (set in the plugin's manifest, `[env]`) that serves
#: the connector under another task type than its `task_type_name`, e.g. to
#: run a Python twin beside the connector it replaces.
TASK_TYPE_VARIABLE = "FLYTE_CONNECTOR_TASK_TYPE"


def metadata(wit: Any) -> Any:
    connector = ConnectorRegistry.get_connector()
    task_type = os.environ.get(TASK_TYPE_VARIABLE) or connector.task_type_name
    return wit.Metadata(
        name=connector.name,
        task_categories=[wit.TaskCategory(name=task_type, version=connector.task_type_version)],
        sdk=SDK,
    )


def create(wit: Any, request: Any) -> Awaitable[bytes]:
    return _answer(wit, _create(wit, request))


async def _create(wit: Any, request: Any) -> bytes:
    connector = ConnectorRegistry.get_connector()
    connection = _connection(request.connection, "create", CREATE_ARGUMENTS)
    meta = await connector.create(
        task_template=TaskTemplate(_json_object(request.template, "template")),
        output_prefix=request.output_prefix,
        inputs=_inputs(request.inputs, request.input_types),
        task_execution_metadata=TaskExecutionMetadata(
            _json_object(request.task_execution_metadata, "task execution metadata")
        ),
        **connection,
    )
    if not isinstance(meta, ResourceMeta):
        raise TypeError(f"create returned {type(meta).__name__}, not a ResourceMeta")
    return meta.encode()


def get(wit: Any, request: Any) -> Awaitable[Any]:
    return _answer(wit, _get(wit, request))


async def _get(wit: Any, request: Any) -> Any:
    connector = ConnectorRegistry.get_connector()
    resource = await connector.get(
        _meta(connector, request.resource_meta), **_connection(request.connection, "get", META_ARGUMENTS)
    )
    return _resource(wit, resource)


def delete(wit: Any, request: Any) -> Awaitable[None]:
    return _answer(wit, _delete(wit, request))


async def _delete(wit: Any, request: Any) -> None:
    connector = ConnectorRegistry.get_connector()
    await connector.delete(
        _meta(connector, request.resource_meta), **_connection(request.connection, "delete", META_ARGUMENTS)
    )


def get_metrics(wit: Any, request: Any) -> Awaitable[List[Any]]:
    return _answer(wit, _get_metrics(wit, request))


async def _get_metrics(wit: Any, request: Any) -> List[Any]:
    connector = ConnectorRegistry.get_connector()
    _require(wit, connector, "get_metrics")
    results = await connector.get_metrics(
        _meta(connector, request.resource_meta),
        list(request.queries),
        start_time=request.start_time,
        end_time=request.end_time,
        step=request.step,
        **_connection(request.connection, "get_metrics", METRICS_ARGUMENTS),
    )
    items = results.items() if isinstance(results, dict) else ((r.metric, r.data) for r in results)
    return [wit.MetricResult(metric=metric, data=_dumps(data)) for metric, data in items]


def get_logs(wit: Any, request: Any) -> Awaitable[Any]:
    return _answer(wit, _get_logs(wit, request))


async def _get_logs(wit: Any, request: Any) -> Any:
    connector = ConnectorRegistry.get_connector()
    _require(wit, connector, "get_logs")
    page = await connector.get_logs(
        _meta(connector, request.resource_meta),
        lines=request.lines,
        token=request.token,
        **_connection(request.connection, "get_logs", LOGS_ARGUMENTS),
    )
    if not isinstance(page, LogsPage):
        page = LogsPage(lines=list(page))
    return wit.LogsPage(lines=[str(line) for line in page.lines], next_token=page.next_token)


# -- requests ----------------------------------------------------------------


def _json_object(text: str, what: str) -> Dict[str, Any]:
    value = json.loads(text) if text else {}
    if not isinstance(value, dict):
        raise errors.InvalidRequest(f"the {what} is not a JSON object")
    return value


def _inputs(values_text: str, types_text: str) -> Inputs:
    raw = _json_object(values_text, "inputs")
    types = _json_object(types_text, "input types")
    values = {}
    for name, value in raw.items():
        try:
            values[name] = from_json(value, types.get(name))
        except ValueError as error:
            raise errors.InvalidRequest(f"input {name!r}: {error}") from None
    return Inputs._from_host(values, raw, types)


def _connection(pairs: List[Tuple[str, str]], operation: str, arguments: Tuple[str, ...]) -> Dict[str, str]:
    """The connection's secrets and configs, as keyword arguments of
    `operation`. A key named like one of the call's own `arguments` would
    collide with it, so it fails the request, naming the key (never a
    value), before the connector's code runs."""
    connection = dict(pairs)
    clashes = [repr(key) for key in connection if key in arguments]
    why = "(a connection's secrets and configs reach the connector as keyword arguments)"
    if len(clashes) == 1:
        raise errors.InvalidRequest(
            f"connection key {clashes[0]} clashes with {operation}'s argument of the same name {why}: "
            "rename the secret or config"
        )
    if clashes:
        keys = ", ".join(clashes[:-1]) + " and " + clashes[-1]
        raise errors.InvalidRequest(
            f"connection keys {keys} clash with {operation}'s arguments of the same names {why}: "
            "rename those secrets or configs"
        )
    return connection


def _meta(connector: AsyncConnector, data: bytes) -> ResourceMeta:
    meta_type = connector.metadata_type
    try:
        return meta_type.decode(bytes(data))
    except (ValueError, TypeError, UnicodeDecodeError) as error:
        raise errors.InvalidRequest(f"cannot read the resource meta as {meta_type.__name__}: {error}") from None


def _require(wit: Any, connector: AsyncConnector, method: str) -> None:
    if getattr(type(connector), method) is getattr(AsyncConnector, method):
        raise Err(wit.Error_NotImplemented())


# -- results -----------------------------------------------------------------


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _resource(wit: Any, resource: Any) -> Any:
    if not isinstance(resource, Resource):
        raise TypeError(f"get returned {type(resource).__name__}, not a Resource")
    outputs = None
    if resource.outputs is not None:
        outputs = []
        for name, value in resource.outputs.items():
            try:
                value_json, literal_type = to_json(value)
                outputs.append(
                    wit.Output(
                        name=name,
                        value=_dumps(value_json),
                        literal_type=_dumps(literal_type) if literal_type is not None else None,
                    )
                )
            except (TypeError, ValueError) as error:
                raise TypeError(f"output {name!r}: {error}") from None
    return wit.Resource(
        phase=wit.Phase(int(resource.phase)),
        message=resource.message or "",
        log_links=[
            wit.TaskLog(
                name=link.name,
                uri=link.uri,
                ready=link.ready,
                icon_uri=link.icon_uri,
                show_while_pending=link.ShowWhilePending,
                hide_once_finished=link.HideOnceFinished,
                link_type=wit.LinkType(int(link.link_type)),
            )
            for link in resource.log_links or []
        ],
        outputs=outputs,
        custom_info=_dumps(resource.custom_info) if resource.custom_info is not None else None,
    )


# -- running ---------------------------------------------------------------


def run(answer: Awaitable[T]) -> T:
    """The sync world's way to serve a call: its coroutine (`create(wit,
    request)`, ...) run to its answer on a fresh `PollLoop`; a WIT error
    raised as `Err`."""
    return _loop.run(answer)


#: The answer of a call the host gave up (async world): nobody reads it, the
#: host has answered the client already.
CANCELLED = "the call was cancelled (its deadline passed or its client went away)"


async def _answer(wit: Any, serve: Awaitable[T]) -> T:
    """Awaits the call's coroutine `serve` (the connector's method between
    the request's mapping and the answer's, which starts here); every
    exception it raises becomes the WIT error the client should see, raised
    as `Err`. Nothing else escapes: in the async world an exception leaving
    an export traps the instance, and with it every call it serves."""
    retry.begin_call()
    try:
        return await serve
    except BaseException as error:  # noqa: BLE001 (every failure reaches the client)
        raise _error(wit, error) from None


def _error(wit: Any, error: BaseException) -> Err:
    """The WIT error a failure of the call is answered with."""
    if isinstance(error, Err):
        return error
    if isinstance(error, errors.InvalidRequest):
        return Err(wit.Error_InvalidRequest(str(error)))
    if isinstance(error, errors.Retryable):
        return Err(wit.Error_Retryable(str(error)))
    if isinstance(error, errors.ConnectorError):
        return Err(wit.Error_Failed(str(error)))
    if isinstance(error, http.HttpError):
        variant = wit.Error_Retryable if error.retryable else wit.Error_Failed
        return Err(variant(str(error)))
    if isinstance(error, asyncio.CancelledError):
        return Err(wit.Error_Failed(CANCELLED))
    if isinstance(error, NotImplementedError) and not str(error):
        return Err(wit.Error_NotImplemented())
    if not isinstance(error, NotImplementedError):
        traceback.print_exception(error, file=sys.stderr)
    return Err(wit.Error_Failed(_last_line(error)))


def _last_line(error: BaseException) -> str:
    """The last line of the exception's traceback: `KeyError: 'run_id'`."""
    return traceback.format_exception_only(error)[-1].strip()

"""An async HTTP client over the host's outbound HTTP: `waits.send` in the
async world (the default build), `wasi:http/outgoing-handler` in the sync
world (`flyte-connector build --sync`). Everything below holds in both.

    from flyte_connector import http

    response = await http.post(f"https://{host}/api/2.1/jobs/runs/submit",
                               json=body, headers={"Authorization": f"Bearer {token}"},
                               timeout=30)
    response.raise_for_status()      # 4xx and 5xx: StatusError with the body's start
    run_id = response.json()["run_id"]

The host sends only what the connector's manifest allows (`allowed_hosts`);
anything else raises `Denied`. Every failure is an `HttpError`. Header
values such as `Authorization` never appear in errors or reprs.

What answers and failures mean (the Rust SDK keeps the same contract;
`wit/fixtures/http.json` fixes it and both SDKs' tests check it):

- ok: a status below 400 (`Response.ok`). 1xx, 2xx and 3xx are answers
  (wasi:http follows no redirects); `raise_for_status` raises `StatusError`
  for 4xx and 5xx.
- retryable (`HttpError.retryable`): status 429 and 5xx, and timeouts: the
  host's (`DNS-timeout`, `connection-timeout`, `connection-read-timeout`,
  `connection-write-timeout`, `HTTP-response-timeout`) and the request's own
  `timeout`. Nothing else is: a denied host, a refused or broken connection,
  a failed TLS handshake or proxy, an invalid request, an answer larger than
  the host allows. A retryable error that escapes a connector method fails
  the call as `errors.Retryable` does (UNAVAILABLE, from `get` too, so Flyte
  polls the task again); the others fail it with INTERNAL and the error's
  message.
- timeout: `timeout=` (seconds) bounds the whole exchange, from connecting
  to the last byte of the body; when it passes, `Timeout` is raised. The
  host's connect, first-byte and between-bytes timeouts are set no longer
  than what is left of it.
- retries: a request safe to repeat is repeated when the service throttles
  it or is unavailable (429, 502, 503, 504) or the connection failed before
  anything was sent, after `Retry-After` or a jittered exponential backoff,
  within the call's deadline (`flyte_connector.retry` has the rules).
  `retry=Retry(...)` tunes it, `retry=NO_RETRY` turns it off, and
  `idempotent=True` lets a POST be repeated (one the service deduplicates).

A failure's message names the URL (without its query) and the wasi:http
`error-code` by its WIT case name, with its payload (`connection-refused`,
`DNS-error (rcode NXDOMAIN, info-code 3)`); the host's description in an
`internal-error` (why a TLS handshake or a proxy failed, naming the host) is
shown as the host wrote it: `cannot reach https://api.example.com/x: TLS
handshake with api.example.com:443 failed: the certificate is not trusted
(unknown issuer)`. In the async world the host names the case in
`http-failure.code` and writes the rest in its `message`; a call the host
gave up raises `asyncio.CancelledError` from the request instead.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json as jsonlib
import math
import os
import re
import time
import urllib.parse
from typing import Any, Iterator, List, Mapping, Optional, Tuple, Union

from flyte_connector import _async_loop, _loop
from flyte_connector import retry as _retry
from flyte_connector.retry import NO_RETRY, Retry

__all__ = [
    "ConnectionFailed",
    "Denied",
    "Headers",
    "HttpError",
    "NO_RETRY",
    "RequestInvalid",
    "Response",
    "Retry",
    "StatusError",
    "Timeout",
    "delete",
    "get",
    "patch",
    "post",
    "put",
    "request",
]

_SENSITIVE_HEADERS = frozenset(
    ["authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "x-auth-token"]
)
_QUOTED_BODY = 1024
_READ_CHUNK = 64 * 1024
_NANOS = 1_000_000_000
_MISSING: Any = object()

HeadersArg = Union[Mapping[str, str], List[Tuple[str, str]], None]


# -- errors ------------------------------------------------------------------


class HttpError(Exception):
    """Why a request got no usable answer."""

    #: Whether trying again later may succeed.
    retryable: bool = False
    #: The wasi:http error code's WIT case name, when the host gave one.
    case: Optional[str] = None


class Denied(HttpError):
    """The connector's manifest does not allow this host
    (`HTTP-request-denied`). Not retryable."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"outbound HTTP to {host} is denied by the host's policy: allow it in the connector's "
            "manifest (allowed_hosts)"
        )


class ConnectionFailed(HttpError):
    """The host could not be resolved or reached, its TLS handshake or the
    proxy failed, the connection broke, or the answer was larger than the
    host allows: every error code not sorted elsewhere. Not retryable."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"cannot reach {url}: {message}")


class Timeout(HttpError):
    """The request's `timeout` passed before the answer was read in full, or
    one of the host's timeouts did (DNS, connect, first byte, between
    bytes). Retryable."""

    retryable = True

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"{url} timed out: {message}")


class StatusError(HttpError):
    """The service answered with an error status (400 or more); retryable
    when it is 429 or 5xx."""

    def __init__(self, method: str, url: str, status: int, body: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.body = body
        self.retryable = status == 429 or status >= 500
        super().__init__(f"{method} {url} answered {status}: {body}")


class RequestInvalid(HttpError):
    """The request could not be built, or the host refused its URL or method
    (`HTTP-request-URI-invalid`, `HTTP-request-method-invalid`). Not
    retryable."""

    def __init__(self, message: str) -> None:
        super().__init__(f"invalid request {message}")


# -- responses ---------------------------------------------------------------


class Headers(Mapping[str, str]):
    """Response headers: a case-insensitive mapping to each name's first
    value; `get_all(name)` gives every value, `items()` every pair in order."""

    def __init__(self, pairs: List[Tuple[str, str]]) -> None:
        self._pairs = pairs

    def __getitem__(self, name: str) -> str:
        wanted = name.lower()
        for key, value in self._pairs:
            if key.lower() == wanted:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key, _ in self._pairs:
            if key.lower() not in seen:
                seen.add(key.lower())
                yield key

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._pairs})

    def get_all(self, name: str) -> List[str]:
        """Every value of header `name`, in the order received."""
        wanted = name.lower()
        return [value for key, value in self._pairs if key.lower() == wanted]

    def __repr__(self) -> str:
        return f"Headers({_shown(self._pairs)!r})"


class Response:
    """An answer, read in full."""

    def __init__(self, method: str, url: str, status: int, headers: Headers, content: bytes) -> None:
        self.method = method
        #: The URL asked, without its query.
        self.url = url
        self.status = status
        self.headers = headers
        self.content = content

    @property
    def ok(self) -> bool:
        """Whether the status is below 400: 1xx, 2xx and 3xx are answers, 4xx
        and 5xx errors. The same test as `raise_for_status`."""
        return self.status < 400

    def text(self) -> str:
        """The body as UTF-8 text."""
        try:
            return self.content.decode("utf-8")
        except UnicodeDecodeError as error:
            raise HttpError(f"the answer to {self.method} {self.url} is not UTF-8 text: {error}") from None

    def json(self) -> Any:
        """The body read as JSON."""
        try:
            return jsonlib.loads(self.content)
        except ValueError as error:
            raise HttpError(f"cannot read the answer to {self.method} {self.url} as JSON: {error}") from None

    def raise_for_status(self) -> "Response":
        """The response itself when its status is below 400, else
        `StatusError` with the status and the start of the body."""
        if self.ok:
            return self
        body = self.content.decode("utf-8", errors="replace")
        if len(body) > _QUOTED_BODY:
            body = body[:_QUOTED_BODY] + "…"
        raise StatusError(self.method, self.url, self.status, body)

    def __repr__(self) -> str:
        return f"<Response {self.method} {self.url} {self.status}, {len(self.content)} bytes>"


# -- requests ----------------------------------------------------------------


async def request(
    method: str,
    url: str,
    *,
    headers: HeadersArg = None,
    params: Optional[Mapping[str, Any]] = None,
    json: Any = _MISSING,
    data: Union[bytes, str, None] = None,
    timeout: Optional[float] = None,
    retry: Retry = Retry(),
    idempotent: bool = False,
) -> Response:
    """Sends a request and reads the whole answer, repeating it as
    `flyte_connector.retry` says.

    `params` are added to the URL's query; `json` is sent as a JSON body
    (with `Content-Type: application/json` unless given), `data` as is.
    `timeout` (seconds) bounds each attempt, connecting through the last
    byte of the body (`Timeout`, retryable, when it passes). `retry` tunes
    the retries (`NO_RETRY`: none); `idempotent=True` lets a POST or PATCH
    be repeated."""
    method = method.upper()
    pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
    body = b""
    if json is not _MISSING:
        body = jsonlib.dumps(json).encode("utf-8")
        if not any(name.lower() == "content-type" for name, _ in pairs):
            pairs.append(("Content-Type", "application/json"))
    elif data is not None:
        body = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if params:
        url += ("&" if urllib.parse.urlsplit(url).query else "?") + urllib.parse.urlencode(params)
    return await _send_with_retries(method, url, pairs, body, timeout, retry, idempotent)


def _time_left() -> Optional[float]:
    """Seconds left before the call's deadline; None when it has none."""
    from wit_world.imports import connector_call

    nanos = connector_call.time_left()
    return None if nanos >= 2**64 - 1 else nanos / _NANOS


def _origin(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


async def _send_with_retries(
    method: str,
    url: str,
    pairs: List[Tuple[str, str]],
    body: bytes,
    timeout: Optional[float],
    policy: Retry,
    idempotent: bool,
) -> Response:
    """Attempts the request until an answer or error that is not retried,
    or until retries, the call's budget or its time are spent."""
    from wit_world.imports import connector_http_retries

    repeatable = _retry.repeatable(method, idempotent)
    first_left = _time_left()
    reserve = 0.0 if first_left is None else _retry.reserve(first_left)
    attempt = 0
    while True:
        left = _time_left()
        bound = timeout
        if left is not None:
            room = max(left - reserve, 0.0)
            bound = room if timeout is None else min(timeout, room)
        failure: Optional[HttpError] = None
        response: Optional[Response] = None
        try:
            response = await _send(method, url, pairs, body, bound)
        except HttpError as error:
            if error.case is None or not _retry.retried_code(error.case):
                raise
            failure, reason, asked = error, error.case, None
        if response is not None:
            if not _retry.retried_status(response.status):
                return response
            reason = str(response.status)
            asked = _retry.retry_after(response.headers.get("retry-after"), int(time.time()))
        if not repeatable or attempt >= policy.max_retries:
            return _give_up(response, failure)
        attempt += 1
        wait = asked if asked is not None else policy.wait(attempt, int.from_bytes(os.urandom(4), "big") / 2**32)
        left = _time_left()
        if (left is not None and wait + _retry.MIN_ATTEMPT + reserve > left) or not _retry.take_call_retry():
            return _give_up(response, failure)
        connector_http_retries.retrying(_origin(url), attempt, reason)
        await asyncio.sleep(wait)


def _give_up(response: Optional[Response], failure: Optional[HttpError]) -> Response:
    """The last attempt's outcome, as the request's."""
    if failure is not None:
        raise failure
    assert response is not None
    return response


async def get(url: str, **kwargs: Any) -> Response:
    """`request("GET", url, ...)`."""
    return await request("GET", url, **kwargs)


async def post(url: str, **kwargs: Any) -> Response:
    """`request("POST", url, ...)`."""
    return await request("POST", url, **kwargs)


async def put(url: str, **kwargs: Any) -> Response:
    """`request("PUT", url, ...)`."""
    return await request("PUT", url, **kwargs)


async def patch(url: str, **kwargs: Any) -> Response:
    """`request("PATCH", url, ...)`."""
    return await request("PATCH", url, **kwargs)


async def delete(url: str, **kwargs: Any) -> Response:
    """`request("DELETE", url, ...)`."""
    return await request("DELETE", url, **kwargs)


def _shown(pairs: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    return [(name, "<redacted>" if name.lower() in _SENSITIVE_HEADERS else value) for name, value in pairs]


def _without_query(url: str) -> str:
    return url.split("?", 1)[0].split("#", 1)[0]


async def _send(method: str, url: str, pairs: List[Tuple[str, str]], body: bytes, timeout: Optional[float]) -> Response:
    """One exchange, within `timeout` seconds when given: through
    `waits.send` in the async world, over wasi:http in the sync one."""
    if _async_loop.installed():
        return await _send_waits(method, url, pairs, body, timeout)
    return await _send_wasi(method, url, pairs, body, timeout)


def _target(method: str, url: str) -> Tuple[str, urllib.parse.SplitResult, str]:
    """The URL as errors show it (no query), its parts and its host;
    `RequestInvalid` when it is not an http(s) URL."""
    shown_url = _without_query(url)
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RequestInvalid(f"{method} {shown_url}: not an http(s) URL")
    return shown_url, parts, parts.netloc.rsplit("@", 1)[-1]


#: The `http-failure.code` of a request whose call has ended (given up).
_CANCELLED = "cancelled"


async def _send_waits(
    method: str, url: str, pairs: List[Tuple[str, str]], body: bytes, timeout: Optional[float]
) -> Response:
    """One exchange through `waits.send` (the async world), bodies whole.

    The host bounds connecting and the first byte by `timeout`; the whole
    exchange, the body included, races a timer. A request the timer
    abandons runs on at the host (a host wait cannot be cancelled) until it
    is answered or its call ends, and its answer is dropped. A call the
    host gave up raises `asyncio.CancelledError` here (`_async_loop`)."""
    from componentize_py_types import Err
    from wit_world.imports import connector_waits as waits

    shown_url, _, host = _target(method, url)
    nanos = None if timeout is None else max(1, math.ceil(timeout * _NANOS))
    request = waits.HttpRequest(
        method=method, url=url, headers=pairs, body=body, first_byte_timeout=nanos, connect_timeout=nanos
    )
    exchange = _async_loop.host_wait(lambda: waits.send(request))
    try:
        answer = await (exchange if timeout is None else asyncio.wait_for(exchange, max(timeout, 0.0)))
    except asyncio.TimeoutError:
        raise Timeout(shown_url, f"no complete answer within {timeout:g}s") from None
    except Err as error:
        failure = error.value
        if failure.code == _CANCELLED:
            _async_loop.give_up()
            raise asyncio.CancelledError(_async_loop.GIVEN_UP) from None
        raise _failed(failure.code, failure.message, method, shown_url, host) from None
    return Response(method, shown_url, answer.status, Headers(list(answer.headers)), bytes(answer.body))


async def _send_wasi(
    method: str, url: str, pairs: List[Tuple[str, str]], body: bytes, timeout: Optional[float]
) -> Response:
    """One exchange over wasi:http (the sync world).

    The deadline is the loop's: every wait races its pollable against it,
    and reads that never wait check it too. Child resources (a stream, a
    pollable) are let go of before their parents (a body, a future): wasi
    traps a guest that drops a parent whose children live. So a pollable is
    never held in a variable, which a traceback could keep alive past its
    parent: the loop holds it only while it is waited for."""
    from componentize_py_types import Err
    from wit_world.imports import outgoing_handler, streams
    from wit_world.imports import wasi_http_types as wasi

    shown_url, parts, host = _target(method, url)
    loop = _loop.current()
    deadline = None if timeout is None else loop.time() + timeout

    def timed_out() -> Timeout:
        return Timeout(shown_url, f"no complete answer within {timeout:g}s")

    def check_deadline() -> None:
        if deadline is not None and loop.time() >= deadline:
            raise timed_out()

    try:
        fields = wasi.Fields.from_list([(name, value.encode("utf-8")) for name, value in pairs])
    except Err as error:
        raise RequestInvalid(f"{method} {shown_url}: a header is not allowed ({_code_text(error.value)})") from None
    outgoing = wasi.OutgoingRequest(fields)
    try:
        outgoing.set_method(_method(wasi, method))
        outgoing.set_scheme(wasi.Scheme_Https() if parts.scheme == "https" else wasi.Scheme_Http())
        outgoing.set_authority(parts.netloc)
        outgoing.set_path_with_query((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    except Err:
        raise RequestInvalid(f"{method} {shown_url}: the method or URL is malformed") from None

    options = None
    if deadline is not None:
        check_deadline()
        # Each no longer than what is left, so the host's error code names
        # the stage that stalled; the deadline still bounds their sum.
        left = max(1, int((deadline - loop.time()) * _NANOS))
        options = wasi.RequestOptions()
        setters = (options.set_connect_timeout, options.set_first_byte_timeout, options.set_between_bytes_timeout)
        for set_timeout in setters:
            try:
                set_timeout(left)
            except Err:
                pass  # a host without this option; the deadline still holds

    outgoing_body = outgoing.body()
    try:
        pending = outgoing_handler.handle(outgoing, options)
    except Err as error:
        raise _classify(error.value, method, shown_url, host) from None

    stream = outgoing_body.write()
    try:
        offset = 0
        while offset < len(body):
            check_deadline()
            try:
                allowed = stream.check_write()
            except Err:
                break  # the request failed; its response says why
            if allowed == 0:
                if not await loop.wait_for(stream.subscribe(), deadline):
                    raise timed_out()
                continue
            chunk = body[offset : offset + min(allowed, _READ_CHUNK)]
            stream.write(chunk)
            offset += len(chunk)
    finally:
        stream.__exit__(None, None, None)
    try:
        wasi.OutgoingBody.finish(outgoing_body, None)
    except Err:
        pass  # as above

    if not await loop.wait_for(pending.subscribe(), deadline):
        raise timed_out()
    outcome = pending.get()
    if outcome is None or isinstance(outcome, Err):
        raise ConnectionFailed(shown_url, "the response was lost")
    answer = outcome.value
    if isinstance(answer, Err):
        raise _classify(answer.value, method, shown_url, host)
    incoming = answer.value
    status = incoming.status()
    headers = Headers(
        [(name, value.decode("utf-8", errors="replace")) for name, value in incoming.headers().entries()]
    )

    incoming_body = incoming.consume()
    input_stream = incoming_body.stream()
    chunks = []
    try:
        while True:
            check_deadline()
            try:
                chunk = input_stream.read(_READ_CHUNK)
            except Err as error:
                if isinstance(error.value, streams.StreamError_Closed):
                    break
                raise _stream_error(error.value, method, shown_url, host) from None
            if chunk:
                chunks.append(chunk)
            elif not await loop.wait_for(input_stream.subscribe(), deadline):
                raise timed_out()
    except BaseException:
        input_stream.__exit__(None, None, None)
        incoming_body.__exit__(None, None, None)
        raise
    input_stream.__exit__(None, None, None)
    trailers = wasi.IncomingBody.finish(incoming_body)
    trailers.__exit__(None, None, None)
    return Response(method, shown_url, status, headers, b"".join(chunks))


def _method(wasi: Any, method: str) -> Any:
    known = {
        "GET": wasi.Method_Get,
        "HEAD": wasi.Method_Head,
        "POST": wasi.Method_Post,
        "PUT": wasi.Method_Put,
        "DELETE": wasi.Method_Delete,
        "OPTIONS": wasi.Method_Options,
        "PATCH": wasi.Method_Patch,
    }
    return known[method]() if method in known else wasi.Method_Other(method)


#: The cases of wasi:http's `error-code`, as the WIT spells them.
_WIT_CASES = [
    "DNS-timeout",
    "DNS-error",
    "destination-not-found",
    "destination-unavailable",
    "destination-IP-prohibited",
    "destination-IP-unroutable",
    "connection-refused",
    "connection-terminated",
    "connection-timeout",
    "connection-read-timeout",
    "connection-write-timeout",
    "connection-limit-reached",
    "TLS-protocol-error",
    "TLS-certificate-error",
    "TLS-alert-received",
    "HTTP-request-denied",
    "HTTP-request-length-required",
    "HTTP-request-body-size",
    "HTTP-request-method-invalid",
    "HTTP-request-URI-invalid",
    "HTTP-request-URI-too-long",
    "HTTP-request-header-section-size",
    "HTTP-request-header-size",
    "HTTP-request-trailer-section-size",
    "HTTP-request-trailer-size",
    "HTTP-response-incomplete",
    "HTTP-response-header-section-size",
    "HTTP-response-header-size",
    "HTTP-response-body-size",
    "HTTP-response-trailer-section-size",
    "HTTP-response-trailer-size",
    "HTTP-response-transfer-coding",
    "HTTP-response-content-coding",
    "HTTP-response-timeout",
    "HTTP-upgrade-failed",
    "HTTP-protocol-error",
    "loop-detected",
    "configuration-error",
    "internal-error",
]

#: componentize-py's class name for a case (`ErrorCode_HttpRequestUriInvalid`,
#: without `ErrorCode_`) → its WIT name.
_CASE_NAMES = {"".join(part.capitalize() for part in case.split("-")): case for case in _WIT_CASES}


def _case(code: Any) -> str:
    """`ErrorCode_HttpRequestUriInvalid()` → `HTTP-request-URI-invalid`."""
    name = type(code).__name__.split("_", 1)[-1]
    return _CASE_NAMES.get(name, name)


def _code_text(code: Any) -> str:
    """A wasi:http error code as messages show it (the Rust SDK writes the
    same): its WIT case name, then its payload's parts in parentheses
    (`DNS-error (rcode NXDOMAIN, info-code 3)`, `HTTP-request-body-size
    (1024)`); `internal-error` with a payload is the host's text alone, as
    the host wrote it (a refused TLS handshake, a proxy that said no)."""
    case = _case(code)
    payload = getattr(code, "value", None)
    if payload is None:
        return case
    if case == "internal-error":
        return str(payload)
    if dataclasses.is_dataclass(payload):
        parts = [
            f"{field.name.replace('_', '-')} {getattr(payload, field.name)}"
            for field in dataclasses.fields(payload)
            if getattr(payload, field.name) is not None
        ]
    else:
        parts = [str(payload)]
    return f"{case} ({', '.join(parts)})" if parts else case


_TIMEOUTS = frozenset(
    [
        "DNS-timeout",
        "connection-timeout",
        "connection-read-timeout",
        "connection-write-timeout",
        "HTTP-response-timeout",
    ]
)


def _classify(code: Any, method: str, url: str, host: str) -> HttpError:
    """Sorts a wasi:http error code into what a connector can act on: the
    kinds `wit/fixtures/http.json` gives each code; the error keeps the
    code's case name (what retries are judged by)."""
    case = _case(code)
    limit = getattr(code, "value", None) if case == "HTTP-response-body-size" else None
    return _sorted(case, _code_text(code), limit, method, url, host)


_BODY_SIZE = re.compile(r"HTTP-response-body-size \((\d+)\)")


def _failed(code: str, message: str, method: str, url: str, host: str) -> HttpError:
    """A `waits.send` failure, sorted as the wasi:http error code it names
    (`code`) is. The host writes `message` as `_code_text` writes a code
    (`DNS-error (rcode NXDOMAIN)`; an `internal-error`'s text alone);
    where it does not lead with the case name, the case name is added."""
    if not message:
        text = code
    elif code == "internal-error" or message.startswith(code):
        text = message
    else:
        text = f"{code} ({message})"
    limit = None
    if code == "HTTP-response-body-size":
        found = _BODY_SIZE.fullmatch(message)
        limit = int(found.group(1)) if found else None
    return _sorted(code, text, limit, method, url, host)


def _sorted(case: str, text: str, limit: Optional[int], method: str, url: str, host: str) -> HttpError:
    """The error of an exchange that failed with the wasi:http error code
    `case`, `text` saying what happened, `limit` the response size a
    `HTTP-response-body-size` names."""
    error: HttpError
    if case == "HTTP-request-denied":
        error = Denied(host)
    elif case in _TIMEOUTS:
        error = Timeout(url, text)
    elif case == "HTTP-response-body-size":
        allowed = f"{limit} bytes; " if limit is not None else ""
        error = ConnectionFailed(
            url, f"the response is larger than the host allows ({allowed}max_response_mb in the connector's manifest)"
        )
    elif case in ("HTTP-request-URI-invalid", "HTTP-request-method-invalid"):
        error = RequestInvalid(f"{method} {url}: {text}")
    else:
        error = ConnectionFailed(url, text)
    error.case = case
    return error


def _stream_error(error: Any, method: str, url: str, host: str) -> HttpError:
    """A body stream that failed: the error code behind it when the host gives one."""
    from wit_world.imports import wasi_http_types as wasi

    failure = getattr(error, "value", None)
    code = wasi.http_error_code(failure) if failure is not None else None
    if code is not None:
        return _classify(code, method, url, host)
    return ConnectionFailed(url, "the connection broke while reading the answer")

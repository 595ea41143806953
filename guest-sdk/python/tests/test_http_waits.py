"""The HTTP client in the async world: each attempt through `waits.send`
on a component host (`component_host`), the same code above it as over
wasi:http (`test_http.py`): the request as the host receives it, failures
sorted as `wit/fixtures/http.json` sorts wasi:http's error codes, the
request's timeout, retries waiting through `waits.sleep`, and a call given
up while it waits for an answer."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any, List

import pytest

from component_host import SECOND
from flyte_connector import http, retry

CONTRACT = json.loads(
    (Path(__file__).resolve().parents[3] / "wit" / "fixtures" / "http.json").read_text(encoding="utf-8")
)
URL = CONTRACT["request"]["url"]
ORIGIN = "https://api.example.com"


@pytest.fixture
def host(component):
    """The component host; requests run in one call (`fetch`)."""
    return component


def fetch(host, request: Any):
    """Runs `request()` (a coroutine function) as one call of the async
    world, to its end; the call (`outcome` reads what `request` did)."""
    from flyte_connector import _async_loop

    async def call():
        retry.begin_call()
        try:
            return ("ok", await request())
        except BaseException as error:  # noqa: BLE001 (the test looks at it)
            return ("raised", error)

    started = host.start(_async_loop.serve(call()))
    host.run()
    return started


def outcome(call) -> Any:
    """What `fetch`'s request returned, or raises what it raised."""
    kind, value = call.result()
    if kind == "raised":
        raise value
    return value


def test_a_request_reaches_the_host_whole_and_its_answer_comes_back(host):
    host.service = lambda request: (0.25, host.ok(201, b'{"id": 7}', [("Content-Type", "application/json")]))
    call = fetch(
        host,
        lambda: http.post(URL, json={"q": 1}, params={"page": 2}, headers={"Authorization": "Bearer t"}, timeout=2),
    )
    response = outcome(call)
    assert (response.status, response.json(), response.headers["content-type"]) == (201, {"id": 7}, "application/json")
    assert response.url == URL
    [(_, request)] = host.sent
    assert (request.method, request.url, request.body) == ("POST", URL + "?page=2", b'{"q": 1}')
    assert request.headers == [("Authorization", "Bearer t"), ("Content-Type", "application/json")]
    # The host bounds connecting and the first byte by the request's timeout.
    assert (request.connect_timeout, request.first_byte_timeout) == (2 * SECOND, 2 * SECOND)


def test_without_a_timeout_or_deadline_the_host_applies_its_own_limits(host):
    call = fetch(host, lambda: http.get(URL))
    assert outcome(call).status == 200
    [(_, request)] = host.sent
    assert (request.connect_timeout, request.first_byte_timeout) == (None, None)


def test_a_url_that_is_not_http_is_refused_before_the_host_sees_it(host):
    with pytest.raises(http.RequestInvalid, match="not an http"):
        outcome(fetch(host, lambda: http.get("ftp://api.example.com/x")))
    assert host.sent == []


def test_the_timeout_bounds_the_whole_exchange(host):
    deadline = CONTRACT["deadline"]
    timeout = deadline["timeout_seconds"]
    # The host's timeouts do not fire: the answer trickles in for longer.
    host.service = lambda request: (3 * timeout, host.ok(200, b"late"))
    start = host.now_ns
    call = fetch(host, lambda: http.get(URL, timeout=timeout, retry=http.NO_RETRY))
    with pytest.raises(http.Timeout) as raised:
        outcome(call)
    assert deadline["message_contains"] in str(raised.value)
    assert raised.value.retryable == deadline["retryable"]
    assert call.returned_ns == start + timeout * SECOND
    # The abandoned request ran on at the host until the call returned; its
    # end (`cancelled`) is dropped, and the call's task ends with it.
    assert call.exited_ns == call.returned_ns
    assert host.waits == {}


def message_of(case: dict) -> str:
    """What the host writes in `http-failure.message`: the code as
    `http._code_text` renders the generated wasi:http code."""
    from wit_world.imports import wasi_http_types as wasi

    from test_fixtures import error_code

    return http._code_text(error_code(wasi, case["code"], case["payload"]))


KINDS = {
    http.Denied: "denied",
    http.ConnectionFailed: "connection",
    http.Timeout: "timeout",
    http.RequestInvalid: "invalid",
}


def test_failures_are_sorted_and_named_as_the_fixture_says(bindings):
    request = CONTRACT["request"]
    for case in CONTRACT["error_codes"]:
        shown = f"{case['code']} {case['payload']!r}"
        error = http._failed(case["code"], message_of(case), request["method"], request["url"], request["host"])
        assert KINDS[type(error)] == case["kind"], shown
        assert error.retryable == case["retryable"], shown
        assert error.case == case["code"], shown
        assert case["message_contains"] in str(error), (shown, str(error))
        for text in CONTRACT["messages_never_contain"]:
            assert text not in str(error), shown


@pytest.mark.parametrize(
    "code,message,shown",
    [
        ("connection-refused", "", "cannot reach https://api.example.com/x: connection-refused"),
        ("connection-refused", "connect to 10.0.0.1:443", "connection-refused (connect to 10.0.0.1:443)"),
        ("internal-error", "the proxy said no", "cannot reach https://api.example.com/x: the proxy said no"),
    ],
)
def test_a_failure_names_its_case_whatever_the_host_wrote(code, message, shown):
    error = http._failed(code, message, "GET", URL, "api.example.com")
    assert shown in str(error)


def test_a_failure_from_the_host_raises_its_error(host):
    host.service = lambda request: (0.1, host.failure("HTTP-request-denied", "HTTP-request-denied"))
    with pytest.raises(http.Denied, match="allowed_hosts"):
        outcome(fetch(host, lambda: http.get(URL)))


def test_throttled_answers_and_unsent_failures_are_retried_after_host_sleeps(host):
    answers: List[Any] = [
        host.ok(429),
        host.failure("connection-refused", "connection-refused"),
        host.ok(503, headers=[("Retry-After", "3")]),
        host.ok(200, b"ok"),
    ]
    host.service = lambda request: (0.0, answers.pop(0))
    response = outcome(fetch(host, lambda: http.get(URL)))
    assert (response.status, response.content) == (200, b"ok")
    assert host.retries == [(ORIGIN, 1, "429"), (ORIGIN, 2, "connection-refused"), (ORIGIN, 3, "503")]
    attempts = [at for at, _ in host.sent]
    waits = [after - before for before, after in zip(attempts, attempts[1:])]
    for attempt, (shortest, longest) in enumerate(CONTRACT["retry"]["backoff_ms"][:2], start=1):
        assert shortest * SECOND // 1000 <= waits[attempt - 1] <= longest * SECOND // 1000, attempt
    assert waits[2] == 3 * SECOND  # Retry-After


def test_a_call_given_up_while_it_waits_for_an_answer_raises_cancelled_error(host):
    host.service = lambda request: (30, host.ok(200))
    unwound = []

    async def request():
        try:
            return await http.get(URL)
        finally:
            unwound.append(host.now_ns)

    from flyte_connector import _async_loop

    async def call():
        try:
            await request()
        except asyncio.CancelledError as error:
            return str(error)

    started = host.start(_async_loop.serve(call()))
    host.run(until=1)
    host.give_up(started)
    host.run()
    assert started.result() == "the call was given up by the host"
    assert unwound == [11 * SECOND]
    assert started.exited_ns == 11 * SECOND


def test_a_call_given_up_answers_an_error_and_its_retries_stop(host, monkeypatch):
    from componentize_py_types import Err
    from wit_world.imports import connector_types as wit

    from flyte_connector import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta, _dispatch

    @dataclasses.dataclass
    class Meta(ResourceMeta):
        job: str = ""

    class Polls(AsyncConnector):
        name = "Polls"
        task_type_name = "polls"
        metadata_type = Meta

        async def create(self, task_template, output_prefix, inputs=None, **kwargs):
            return Meta()

        async def get(self, resource_meta, **kwargs):
            (await http.get(URL)).raise_for_status()
            return Resource()

        async def delete(self, resource_meta, **kwargs):
            return None

    ConnectorRegistry._clear()
    ConnectorRegistry.register(Polls())
    try:
        host.service = lambda request: (0.0, host.ok(503))  # never recovers: retries back off
        request = wit.GetRequest(wit.TaskCategory("polls", 0), b"{}", "", [])
        call = host.start(host.guest.AsyncConnector().get(request))
        host.run(until=0.1)
        host.give_up(call)
        host.run()
    finally:
        ConnectorRegistry._clear()
    with pytest.raises(Err) as raised:
        call.result()
    assert raised.value.value == wit.Error_Failed(_dispatch.CANCELLED)
    assert len(host.sent) == 1 and host.retries == [(ORIGIN, 1, "503")]
    assert call.exited_ns == call.returned_ns

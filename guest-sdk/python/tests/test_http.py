"""The HTTP client's exchange (`http.request`) under plain CPython: the data
types componentize-py generates, with fake wasi:http resources on a
simulated clock, so a deadline and the order resources are dropped in can
be watched. The stages `timeout` bounds come from `wit/fixtures/http.json`."""

from __future__ import annotations

import gc
import json
import math
import sys
import types
import weakref
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from flyte_connector import _loop, http, retry

CONTRACT = json.loads(
    (Path(__file__).resolve().parents[3] / "wit" / "fixtures" / "http.json").read_text(encoding="utf-8")
)
SECOND = 1_000_000_000
NEVER = math.inf


class Clock:
    """Monotonic time that moves only when the loop blocks: to the earliest
    instant any polled pollable becomes ready at."""

    def __init__(self) -> None:
        self.now_ns = 10 * SECOND

    def now(self) -> int:
        return self.now_ns

    def subscribe_instant(self, when: int) -> "Pollable":
        return Pollable(None, when)

    def poll(self, pollables: List["Pollable"]) -> List[int]:
        ready = [i for i, p in enumerate(pollables) if p.when <= self.now_ns]
        if not ready:
            when = min(p.when for p in pollables)
            assert when != NEVER, "blocked on pollables that never become ready"
            self.now_ns = int(when)
            ready = [i for i, p in enumerate(pollables) if p.when <= self.now_ns]
        return ready


class World:
    """The fake host: its clock, the service's script, what it saw."""

    def __init__(self, clock: Clock, answer_at: float, chunks: List[Tuple[float, bytes]]) -> None:
        self.clock = clock
        self.answer_at = answer_at
        self.chunks = chunks
        self.live: "weakref.WeakSet[Resource]" = weakref.WeakSet()
        self.violations: List[str] = []
        self.options: Optional[Dict[str, int]] = None  # the timeouts handle was given
        self.sent = b""
        #: The answers to the attempts, in order: status and headers; the
        #: last one answers every attempt after it.
        self.answers: List[Tuple[int, List[Tuple[str, bytes]]]] = [(200, [])]
        #: When the call's deadline is, on the clock (None: no deadline).
        self.deadline_ns: Optional[int] = None
        #: What the guest told the host of its retries.
        self.retries: List[Tuple[str, int, str]] = []
        #: The clock at each attempt.
        self.attempts: List[int] = []

    def answer(self) -> Tuple[int, List[Tuple[str, bytes]]]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def time_left(self) -> int:
        if self.deadline_ns is None:
            return 2**64 - 1
        return max(self.deadline_ns - self.clock.now_ns, 0)


WORLD: Optional[World] = None


class Resource:
    """A wasi resource, dropped by `__exit__` or when collected (as
    componentize-py's are): dropping one whose children live is what
    wasmtime traps on, so it is recorded here as a violation."""

    def __init__(self, parent: Optional["Resource"] = None) -> None:
        assert WORLD is not None
        self.world = WORLD
        self.parent = parent
        self.children = 0
        self.dropped = False
        if parent is not None:
            parent.children += 1
        self.world.live.add(self)

    def drop(self) -> None:
        if self.dropped:
            return
        self.dropped = True
        if self.children:
            self.world.violations.append(f"{type(self).__name__} dropped with {self.children} children alive")
        if self.parent is not None:
            self.parent.children -= 1
        self.world.live.discard(self)

    def __exit__(self, *_: Any) -> None:
        self.drop()

    def __del__(self) -> None:
        self.drop()


class Pollable(Resource):
    def __init__(self, parent: Optional[Resource], when: float) -> None:
        super().__init__(parent)
        self.when = when


class Fields(Resource):
    def __init__(self, entries: List[Tuple[str, bytes]]) -> None:
        super().__init__()
        self._entries = entries

    @classmethod
    def from_list(cls, entries: List[Tuple[str, bytes]]) -> "Fields":
        return cls(entries)

    def entries(self) -> List[Tuple[str, bytes]]:
        return self._entries


class OutgoingRequest(Resource):
    def __init__(self, fields: Fields) -> None:
        super().__init__()
        fields.drop()  # the request takes its headers

    def set_method(self, method: Any) -> None:
        pass

    def set_scheme(self, scheme: Any) -> None:
        pass

    def set_authority(self, authority: str) -> None:
        pass

    def set_path_with_query(self, path: str) -> None:
        pass

    def body(self) -> "OutgoingBody":
        return OutgoingBody()


class RequestOptions(Resource):
    def __init__(self) -> None:
        super().__init__()
        self.timeouts: Dict[str, int] = {}

    def set_connect_timeout(self, nanos: int) -> None:
        self.timeouts["connect-timeout"] = nanos

    def set_first_byte_timeout(self, nanos: int) -> None:
        self.timeouts["first-byte-timeout"] = nanos

    def set_between_bytes_timeout(self, nanos: int) -> None:
        self.timeouts["between-bytes-timeout"] = nanos


class OutputStream(Resource):
    def check_write(self) -> int:
        return 4096

    def write(self, chunk: bytes) -> None:
        self.world.sent += chunk

    def subscribe(self) -> Pollable:
        return Pollable(self, self.world.clock.now_ns)


class OutgoingBody(Resource):
    def write(self) -> OutputStream:
        return OutputStream(self)

    @staticmethod
    def finish(body: "OutgoingBody", trailers: Any) -> None:
        body.drop()


class FutureIncomingResponse(Resource):
    def subscribe(self) -> Pollable:
        return Pollable(self, self.world.answer_at)

    def get(self) -> Any:
        from componentize_py_types import Ok

        if self.world.clock.now_ns < self.world.answer_at:
            return None
        return Ok(Ok(IncomingResponse()))


class IncomingResponse(Resource):
    def __init__(self) -> None:
        super().__init__()
        self.answer = self.world.answer()

    def status(self) -> int:
        return self.answer[0]

    def headers(self) -> Fields:
        return Fields([("content-type", b"text/plain"), *self.answer[1]])

    def consume(self) -> "IncomingBody":
        return IncomingBody()


class IncomingBody(Resource):
    def stream(self) -> "InputStream":
        return InputStream(self)

    @staticmethod
    def finish(body: "IncomingBody") -> Resource:
        body.drop()
        return Resource()  # future-trailers


class InputStream(Resource):
    def __init__(self, parent: Resource) -> None:
        super().__init__(parent)
        self.next = 0

    def read(self, length: int) -> bytes:
        from componentize_py_types import Err
        from wit_world.imports import streams

        chunks = self.world.chunks
        if self.next == len(chunks):
            raise Err(streams.StreamError_Closed())
        at, chunk = chunks[self.next]
        if at > self.world.clock.now_ns:
            return b""
        self.next += 1
        return chunk

    def subscribe(self) -> Pollable:
        chunks = self.world.chunks
        at = chunks[self.next][0] if self.next < len(chunks) else self.world.clock.now_ns
        return Pollable(self, at)


def handle(request: OutgoingRequest, options: Optional[RequestOptions]) -> FutureIncomingResponse:
    """Takes the request and its options, as wasi:http's `handle` does."""
    assert WORLD is not None
    WORLD.attempts.append(WORLD.clock.now_ns)
    request.drop()
    if options is not None:
        WORLD.options = dict(options.timeouts)
        options.drop()
    return FutureIncomingResponse()


@pytest.fixture
def world(bindings, monkeypatch):
    """Installs the fake wasi:http in place of the generated imports and
    yields a function that sets the service's script and makes the World."""
    from wit_world.imports import streams
    from wit_world.imports import wasi_http_types as generated

    wasi = types.SimpleNamespace(**vars(generated))
    for fake in (Fields, OutgoingRequest, RequestOptions, OutgoingBody, IncomingBody):
        setattr(wasi, fake.__name__, fake)
    imports = types.ModuleType("wit_world.imports")
    imports.outgoing_handler = types.SimpleNamespace(handle=handle)
    imports.streams = streams
    imports.wasi_http_types = wasi
    imports.connector_call = types.SimpleNamespace(time_left=lambda: WORLD.time_left())
    imports.connector_http_retries = types.SimpleNamespace(
        retrying=lambda origin, attempt, reason: WORLD.retries.append((origin, attempt, reason))
    )
    monkeypatch.setitem(sys.modules, "wit_world.imports", imports)
    retry.begin_call()  # each test is a call of its own

    def make(answer_at: float, chunks: List[Tuple[float, bytes]]) -> World:
        global WORLD
        WORLD = World(Clock(), answer_at, chunks)
        return WORLD

    yield make
    globals()["WORLD"] = None


def get(world: World, **kwargs: Any) -> Any:
    return _loop.run(http.get(CONTRACT["request"]["url"], **kwargs), world.clock)


def dropped_in_order(world: World) -> None:
    """Every resource dropped, none before its children."""
    gc.collect()
    assert world.violations == []
    assert [type(r).__name__ for r in world.live] == []


def stall(world_at: int, bound: str, timeout_ns: int) -> Tuple[float, List[Tuple[float, bytes]]]:
    """A service that stalls at `bound`: its answer time and body chunks."""
    if bound in ("connect", "first-byte"):
        # To the guest, both are the response not arriving: connect never
        # finishing, or headers coming long after the timeout.
        return (NEVER if bound == "connect" else world_at + 3 * timeout_ns), [(world_at, b"late")]
    assert bound == "body", f"a stage the fixture names that this test cannot stall: {bound}"
    # Headers at once, then a trickle: each gap shorter than the timeout (so
    # no between-bytes timeout fires), the whole far longer.
    gap = timeout_ns // 4
    return world_at, [(world_at + gap * (i + 1), b"x" * 10) for i in range(40)]


@pytest.mark.parametrize("bound", CONTRACT["timeout_bounds"])
def test_the_timeout_bounds_each_stage_of_the_exchange(world, bound):
    deadline = CONTRACT["deadline"]
    timeout = deadline["timeout_seconds"]
    timeout_ns = timeout * SECOND
    clock_start = 10 * SECOND
    answer_at, chunks = stall(clock_start, bound, timeout_ns)
    w = world(answer_at, chunks)

    assert deadline["kind"] == "timeout"
    with pytest.raises(http.Timeout) as raised:
        get(w, timeout=timeout)

    error = raised.value
    assert error.retryable == deadline["retryable"]
    assert deadline["message_contains"] in str(error)
    # Raised when the deadline passed, not at a stage's own timeout later.
    assert w.clock.now_ns == clock_start + timeout_ns
    # The host was also given each stage's timeout, none longer than the whole.
    assert w.options is not None
    assert sorted(w.options) == sorted(CONTRACT["host_timeouts"])
    assert all(0 < nanos <= timeout_ns for nanos in w.options.values())
    del raised, error
    dropped_in_order(w)


def test_an_answer_within_the_timeout_is_read_whole(world):
    w = world(10 * SECOND + SECOND // 10, [(10 * SECOND + i * SECOND // 10, b"%d" % i) for i in range(1, 6)])
    response = get(w, timeout=2, json={"q": 1})
    assert response.content == b"12345"
    assert response.ok and response.headers["Content-Type"] == "text/plain"
    assert w.sent == b'{"q": 1}'
    del response
    dropped_in_order(w)


def test_without_a_timeout_a_slow_body_is_waited_for(world):
    w = world(10 * SECOND, [(10 * SECOND + i * 60 * SECOND, b"x") for i in range(1, 4)])
    response = get(w)
    assert response.content == b"xxx"
    assert w.options is None
    del response
    dropped_in_order(w)


# -- retries (wit/fixtures/http.json, `retry`) ---------------------------------

RULES = CONTRACT["retry"]
ORIGIN = "https://api.example.com"


def backoff_seconds(attempt: int) -> Tuple[float, float]:
    shortest, longest = RULES["backoff_ms"][attempt - 1]
    return shortest / 1000, longest / 1000


def test_a_throttled_and_unavailable_service_is_retried_until_it_answers(world):
    w = world(10 * SECOND, [(10 * SECOND, b"ok")])
    w.answers = [(429, []), (503, []), (200, [])]
    response = get(w)
    assert response.status == 200 and response.content == b"ok"
    assert w.retries == [(ORIGIN, 1, "429"), (ORIGIN, 2, "503")]
    # Each wait is within the backoff's bounds for its retry.
    for retry, (before, after) in enumerate(zip(w.attempts, w.attempts[1:]), start=1):
        shortest, longest = backoff_seconds(retry)
        assert shortest * SECOND <= after - before <= longest * SECOND, (retry, after - before)
    dropped_in_order(w)


def test_retry_after_is_waited_for_in_seconds_or_as_a_date(world):
    w = world(10 * SECOND, [(10 * SECOND, b"ok")])
    w.answers = [(503, [("retry-after", b"3")]), (200, [])]
    assert get(w).status == 200
    assert w.attempts[1] - w.attempts[0] == 3 * SECOND


def test_a_post_is_repeated_only_when_marked_idempotent(world):
    w = world(10 * SECOND, [(10 * SECOND, b"")])
    w.answers = [(503, []), (200, [])]
    url = CONTRACT["request"]["url"]
    assert _loop.run(http.post(url), w.clock).status == 503
    assert w.retries == []
    w.answers = [(503, []), (200, [])]
    assert _loop.run(http.post(url, idempotent=True), w.clock).status == 200
    assert [attempt for _, attempt, _ in w.retries] == [1]


def test_no_retry_is_one_attempt_and_other_statuses_are_not_retried(world):
    w = world(10 * SECOND, [(10 * SECOND, b"")])
    w.answers = [(503, []), (200, [])]
    assert get(w, retry=http.NO_RETRY).status == 503
    w.answers = [(500, []), (200, [])]
    assert get(w).status == 500
    assert w.retries == [] and len(w.attempts) == 2


def test_a_service_that_never_recovers_is_given_up_inside_the_calls_deadline(world):
    w = world(10 * SECOND, [(10 * SECOND, b"")])
    w.answers = [(503, [("retry-after", b"1")])]
    w.deadline_ns = w.clock.now_ns + 3 * SECOND
    response = get(w)
    assert response.status == 503
    # The answer reserve (a fifth of the 3 s) and a shortest attempt stay
    # free: two retries a second apart fit, a third does not.
    assert [attempt for _, attempt, _ in w.retries] == [1, 2]
    assert w.clock.now_ns < w.deadline_ns
    # Without a deadline, in a call of its own, the request's own retries
    # run out.
    w.deadline_ns = None
    w.retries.clear()
    retry.begin_call()
    get(w)
    assert len(w.retries) == RULES["defaults"]["max_retries"]


def test_a_calls_retries_are_bounded_across_its_requests(world):
    w = world(10 * SECOND, [(10 * SECOND, b"")])
    w.answers = [(503, [("retry-after", b"0")])]
    for _ in range(3):
        get(w)
    assert len(w.retries) == RULES["defaults"]["call_budget"]

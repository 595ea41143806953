"""A Component Model host for componentize-py's async support, under plain
CPython: what the async world's tests run the SDK on.

componentize-py runs each call of an async export as a task of its module
`componentize_py_async_support` (the real one, generated with the
bindings), which talks to the host through `componentize_py_runtime`: the
canonical ABI's task return, waitable sets, subtasks and the task's context
slot. `runtime_module()` stands in for that module, forwarding to the
`Host` a test installs as `HOST`; the `Host` plays wasmtime's part: it
starts export calls (`start`), keeps each call's pending waits (`waits.send`,
`waits.sleep`) on a simulated monotonic clock, and delivers their ends in
time order (`run`), entering the call whose wait ended, as the host does.
Like the real host it ends a call's waits once the call returns or is given
up (`give_up`): its sleeps answer `call-ended`, its requests fail as
`cancelled`.
An exception leaving componentize-py's support is a trap (`Trap`): in a
component it would fail every call of the instance.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sys
import types
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

SECOND = 1_000_000_000

# componentize_py_async_support's codes (`_Event`, `_Status`, `_CallbackCode`).
_EVENT_SUBTASK = 1
_STATUS_RETURNED = 2
_EXIT = 0
_WAIT = 2


class Trap(Exception):
    """The instance trapped: an exception left componentize-py's support."""


HOST: Optional["Host"] = None


def _host() -> "Host":
    if HOST is None:
        raise AssertionError("componentize_py_runtime used outside a test's component host")
    return HOST


def runtime_module() -> types.ModuleType:
    """The `componentize_py_runtime` componentize-py's support imports."""
    module = types.ModuleType("componentize_py_runtime")
    module.call_task_return = lambda export_index, borrows, result: _host().task_return(result)
    module.waitable_set_new = lambda: _host().waitable_set_new()
    module.waitable_set_drop = lambda handle: _host().waitable_set_drop(handle)
    module.waitable_join = lambda waitable, handle: _host().waitable_join(waitable, handle)
    module.subtask_drop = lambda waitable: _host().subtask_drop(waitable)
    module.context_set = lambda value: _host().context_set(value)
    module.context_get = lambda: _host().context_get()
    module.promise_get_result = lambda event, promise: _host().promise_result(promise)
    return module


class Call:
    """One call of an async export: one Component Model task."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: What the task returned (`Ok` or `Err`), once it did.
        self.answer: Any = None
        self.returned_ns: Optional[int] = None
        self.exited_ns: Optional[int] = None
        self.given_up = False
        self.waitable_set: Optional[int] = None
        self.context: Any = None
        #: What the call wrote through `waits.log`.
        self.logs: List[str] = []
        #: Nanoseconds from the start the call may run (None: no deadline).
        self.deadline_ns: Optional[int] = None

    @property
    def log(self) -> str:
        return "".join(self.logs)

    def result(self) -> Any:
        """The call's answer as the export's caller sees it: the value, or
        the WIT error raised as `Err`."""
        from componentize_py_types import Err

        assert self.returned_ns is not None, f"{self.name} never returned"
        if isinstance(self.answer, Err):
            raise self.answer
        return self.answer.value


@dataclasses.dataclass
class Wait:
    """A subtask: a wait of a call the host has not answered yet."""

    id: int
    call: Call
    kind: str
    due_ns: int
    value: Any
    joined: Optional[int] = None
    done: bool = False


#: What the simulated service answers a request: after how many seconds,
#: and the `result<http-response, http-failure>` (`Ok` or `Err`).
Service = Callable[[Any], Tuple[float, Any]]


class Host:
    """The host side of the async world; see the module doc."""

    def __init__(self, support: types.ModuleType, waits: types.ModuleType) -> None:
        self.support = support
        self.generated_waits = waits
        self.now_ns = 10 * SECOND
        self.calls: List[Call] = []
        self.waits: Dict[int, Wait] = {}
        self._results: Dict[int, Any] = {}
        self._sets: Dict[int, Set[int]] = {}
        self._ids = itertools.count(1)
        self._current: Optional[Call] = None
        #: Answers requests; by default 200 with an empty body, at once.
        self.service: Service = lambda request: (0.0, self.ok(200))
        #: (clock, request) of every `waits.send`.
        self.sent: List[Tuple[int, Any]] = []
        #: (call name, nanos) of every `waits.sleep`.
        self.sleeps: List[Tuple[str, int]] = []
        #: What `waits.log` was given outside any call (a finaliser run by
        #: the tests' garbage collection).
        self.outside_log: List[str] = []
        #: (origin, attempt, reason) of every `http-retries.retrying`.
        self.retries: List[Tuple[str, int, str]] = []
        #: The guest module (`flyte_connector._guest_async`), once imported.
        self.guest: Any = None
        #: What `sys.stdout` and `sys.stderr` are while a call runs (None: as they are).
        self.streams: Optional[Tuple[Any, Any]] = None

    # -- what the service answers ---------------------------------------------

    def ok(self, status: int, body: bytes = b"", headers: Optional[List[Tuple[str, str]]] = None) -> Any:
        from componentize_py_types import Ok

        return Ok(self.generated_waits.HttpResponse(status=status, headers=headers or [], body=body))

    def failure(self, code: str, message: str = "the call has ended") -> Any:
        from componentize_py_types import Err

        return Err(self.generated_waits.HttpFailure(code=code, message=message))

    # -- the imports ---------------------------------------------------------

    def imports(self, connector_types: types.ModuleType) -> types.ModuleType:
        """A `wit_world.imports` whose functions act on this host."""
        from componentize_py_types import Err

        support, generated = self.support, self.generated_waits

        async def sleep(nanos: int) -> Any:
            return await support.await_result(self._sleep(nanos))

        async def send(request: Any) -> Any:
            outcome = await support.await_result(self._send(request))
            if isinstance(outcome, Err):
                raise outcome
            return outcome.value

        module = types.ModuleType("wit_world.imports")
        module.connector_types = connector_types
        module.connector_waits = types.SimpleNamespace(
            HttpRequest=generated.HttpRequest,
            HttpResponse=generated.HttpResponse,
            HttpFailure=generated.HttpFailure,
            SleepEnd=generated.SleepEnd,
            send=send,
            sleep=sleep,
            log=self._log,
        )
        module.monotonic_clock = types.SimpleNamespace(now=lambda: self.now_ns)
        module.connector_call = types.SimpleNamespace(time_left=self._time_left)
        module.connector_http_retries = types.SimpleNamespace(
            retrying=lambda origin, attempt, reason: self.retries.append((origin, attempt, reason))
        )
        return module

    def _log(self, text: str) -> None:
        (self._current.logs if self._current is not None else self.outside_log).append(text)

    def _running(self) -> Call:
        assert self._current is not None, "an import called outside a call"
        return self._current

    def _sleep(self, nanos: int) -> Any:
        from componentize_py_types import Ok

        call = self._running()
        self.sleeps.append((call.name, nanos))
        if call.given_up or call.returned_ns is not None:
            return Ok(self.generated_waits.SleepEnd.CALL_ENDED)
        return self._wait(call, "sleep", self.now_ns + nanos, self.generated_waits.SleepEnd.ELAPSED)

    def _send(self, request: Any) -> Any:
        from componentize_py_types import Ok

        call = self._running()
        self.sent.append((self.now_ns, request))
        if call.given_up or call.returned_ns is not None:
            return Ok(self.failure("cancelled", "the call has ended"))
        after, outcome = self.service(request)
        return self._wait(call, "send", self.now_ns + int(after * SECOND), outcome)

    def _wait(self, call: Call, kind: str, due_ns: int, value: Any) -> Any:
        from componentize_py_types import Err

        wait = Wait(next(self._ids), call, kind, due_ns, value)
        self.waits[wait.id] = wait
        return Err((wait.id, wait.id))  # pending: (waitable, promise)

    def _time_left(self) -> int:
        call = self._running()
        if call.given_up:
            return 0
        if call.deadline_ns is None:
            return 2**64 - 1
        return max(call.deadline_ns - self.now_ns, 0)

    # -- the runtime ---------------------------------------------------------

    def task_return(self, result: Any) -> None:
        call = self._running()
        assert call.returned_ns is None, f"{call.name} returned twice"
        call.answer = result
        call.returned_ns = self.now_ns
        self._end_waits(call)

    def waitable_set_new(self) -> int:
        handle = next(self._ids)
        self._sets[handle] = set()
        self._running().waitable_set = handle
        return handle

    def waitable_set_drop(self, handle: int) -> None:
        members = self._sets.pop(handle)
        assert not members, f"a waitable set dropped with waits in it: {sorted(members)}"

    def waitable_join(self, waitable: int, handle: int) -> None:
        for members in self._sets.values():
            members.discard(waitable)
        self.waits[waitable].joined = handle or None
        if handle:
            self._sets[handle].add(waitable)

    def subtask_drop(self, waitable: int) -> None:
        wait = self.waits.pop(waitable)
        assert wait.done, "a pending subtask dropped"

    def context_set(self, value: Any) -> None:
        self._running().context = value

    def context_get(self) -> Any:
        return self._running().context

    def promise_result(self, promise: int) -> Any:
        return self._results.pop(promise)

    # -- driving -------------------------------------------------------------

    def start(self, coroutine: Any, name: Optional[str] = None) -> Call:
        """Starts an export call (its generated `async def`'s coroutine) and
        runs it until it waits."""
        call = Call(name or f"call {len(self.calls) + 1}")
        self.calls.append(call)
        self._enter(call, lambda: self.support.first_poll(0, 0, coroutine))
        return call

    def serve(self, coroutine: Any) -> Any:
        """Runs one call to its end: its answer, or its WIT error raised."""
        call = self.start(coroutine)
        self.run()
        return call.result()

    def give_up(self, call: Call) -> None:
        """Gives `call` up, as the host does past its deadline: its waits end now."""
        call.given_up = True
        self._end_waits(call)

    def run(self, until: Optional[float] = None) -> None:
        """Delivers the waits' ends in time order until every call's task
        has exited, or until `until` seconds from now."""
        stop = None if until is None else self.now_ns + int(until * SECOND)
        while True:
            pending = [wait for wait in self.waits.values() if not wait.done]
            if not pending:
                stuck = [call.name for call in self.calls if call.exited_ns is None]
                assert not stuck, f"calls wait on nothing the host will answer: {stuck}"
                return
            wait = min(pending, key=lambda w: (w.due_ns, w.id))
            if stop is not None and wait.due_ns > stop:
                self.now_ns = stop
                return
            self.now_ns = max(self.now_ns, wait.due_ns)
            wait.done = True
            self._results[wait.id] = wait.value
            call = wait.call
            assert wait.joined is not None and wait.joined == call.waitable_set, "a wait the call does not wait on"
            self._enter(call, lambda: self.support.callback(_EVENT_SUBTASK, wait.id, _STATUS_RETURNED))

    def _end_waits(self, call: Call) -> None:
        for wait in self.waits.values():
            if wait.call is call and not wait.done:
                ended = self.generated_waits.SleepEnd.CALL_ENDED if wait.kind == "sleep" else self.failure("cancelled")
                wait.value, wait.due_ns = ended, self.now_ns

    def _enter(self, call: Call, step: Callable[[], int]) -> None:
        """Runs the call's task (a first poll or a callback) until it waits or exits."""
        assert call.exited_ns is None, f"{call.name} entered after it exited"
        self._current = call
        asyncio.events._set_running_loop(self.support._loop)
        saved = sys.stdout, sys.stderr
        if self.streams is not None:
            sys.stdout, sys.stderr = self.streams
        try:
            code = step()
        except BaseException as error:  # noqa: BLE001
            raise Trap(f"the instance trapped in {call.name}: {error!r}") from error
        finally:
            self._current = None
            asyncio.events._set_running_loop(None)
            sys.stdout, sys.stderr = saved
        if code == _EXIT:
            call.exited_ns = self.now_ns
            assert call.returned_ns is not None, f"{call.name} exited without returning"
            left = [w.kind for w in self.waits.values() if w.call is call and not w.done]
            assert not left, f"{call.name} exited with waits pending: {left}"
        else:
            assert code & 0xF == _WAIT and code >> 4 == call.waitable_set, code

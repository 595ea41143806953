"""The event loop connector code runs on in the sync world (`flyte-connector
build --sync`; the async world runs on componentize-py's, see `_async_loop`).

CPython's own loops need sockets and selectors, which a component does not
have. This loop runs asyncio's tasks and futures on `wasi:io/poll` instead:
it runs what is ready, then blocks in one `poll` on every pollable a
coroutine awaits (an HTTP response, a body stream) and on a monotonic-clock
pollable for the next timer or deadline, so `await http.get(...)`,
`asyncio.sleep` and `asyncio.gather` work as written. A wait may carry a
deadline (`wait_for(pollable, deadline)`): the pollable and the clock race
in that one `poll`, and the wait ends with whichever is first.

The wasi imports are reached through a `Clock` so the loop can be tested
under plain CPython with a simulated one.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import sys
import traceback
from asyncio import events
from typing import Any, Awaitable, Callable, List, Optional, Protocol, Tuple, TypeVar

T = TypeVar("T")

_NANOS = 1_000_000_000


class Clock(Protocol):
    """What the loop needs from the platform."""

    def now(self) -> int:
        """Monotonic time in nanoseconds."""

    def subscribe_instant(self, when: int) -> Any:
        """A pollable ready at monotonic time `when` (nanoseconds)."""

    def poll(self, pollables: List[Any]) -> List[int]:
        """Blocks until at least one pollable is ready; their indexes."""


class WasiClock:
    """`wasi:clocks/monotonic-clock` and `wasi:io/poll`."""

    def __init__(self) -> None:
        from wit_world.imports import monotonic_clock, poll

        self._clock = monotonic_clock
        self._poll = poll

    def now(self) -> int:
        return self._clock.now()

    def subscribe_instant(self, when: int) -> Any:
        return self._clock.subscribe_instant(when)

    def poll(self, pollables: List[Any]) -> List[int]:
        return list(self._poll.poll(pollables))


class PollLoop(asyncio.AbstractEventLoop):
    """An asyncio event loop over `wasi:io/poll`; see the module doc."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._ready: List[asyncio.Handle] = []
        self._timers: List[Tuple[float, int, asyncio.TimerHandle]] = []
        self._order = itertools.count()
        # (pollable, deadline in clock nanoseconds or None, future)
        self._waiting: List[Tuple[Any, Optional[int], asyncio.Future]] = []
        self._running = False
        self._closed = False
        self._exception_handler: Optional[Callable[..., Any]] = None

    # -- running -------------------------------------------------------------

    def run_until_complete(self, future: Awaitable[T]) -> T:
        if self._closed:
            raise RuntimeError("the event loop is closed")
        if self._running:
            raise RuntimeError("the event loop is already running")
        task = asyncio.ensure_future(future, loop=self)
        self._running = True
        events._set_running_loop(self)
        try:
            while not task.done():
                self._run_once()
        except BaseException:
            task._log_destroy_pending = False  # the error says why it never finished
            raise
        finally:
            self._running = False
            events._set_running_loop(None)
        return task.result()

    def _run_once(self) -> None:
        if not self._ready:
            self._wait()
        now = self.time()
        while self._timers and self._timers[0][0] <= now:
            _, _, handle = heapq.heappop(self._timers)
            if not handle.cancelled():
                self._ready.append(handle)
        ready, self._ready = self._ready, []
        for handle in ready:
            if not handle.cancelled():
                handle._run()

    def _wait(self) -> None:
        """Blocks until a pollable is ready, or the next timer or deadline is due."""
        self._waiting = [w for w in self._waiting if not w[2].done()]
        while self._timers and self._timers[0][2].cancelled():
            heapq.heappop(self._timers)
        pollables = [p for p, _, _ in self._waiting]
        # Rounded up: a timer must not wake the loop before it is due.
        due = [deadline for _, deadline, _ in self._waiting if deadline is not None]
        if self._timers:
            due.append(math.ceil(self._timers[0][0] * _NANOS))
        if due:
            pollables.append(self._clock.subscribe_instant(min(due)))
        if not pollables:
            raise RuntimeError("the connector awaits something that can never finish (no I/O, no timer)")
        ready = set(self._clock.poll(pollables))
        now = self._clock.now()
        still_waiting = []
        for index, (pollable, deadline, future) in enumerate(self._waiting):
            if index in ready:
                future.set_result(True)
            elif deadline is not None and deadline <= now:
                future.set_result(False)
            else:
                still_waiting.append((pollable, deadline, future))
        # The loop lets go of a pollable as soon as its wait ends: wasi
        # refuses to drop a stream or a body while a pollable of it lives,
        # and the coroutine drops them next.
        self._waiting = still_waiting

    def wait_for(self, pollable: Any, deadline: Optional[float] = None) -> asyncio.Future:
        """A future that completes when `pollable` is ready, with True; or,
        when `deadline` (loop time, as `call_at` takes) passes first, with
        False. A wait cancelled lets go of its pollable at once."""
        future = self.create_future()
        due = None if deadline is None else math.ceil(deadline * _NANOS)
        self._waiting.append((pollable, due, future))
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: asyncio.Future) -> None:
        self._waiting = [w for w in self._waiting if w[2] is not future]

    def is_running(self) -> bool:
        return self._running

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()
        self._timers.clear()
        self._waiting.clear()

    async def shutdown_asyncgens(self) -> None:
        pass

    async def shutdown_default_executor(self, timeout: Optional[float] = None) -> None:
        pass

    # -- scheduling ----------------------------------------------------------

    def time(self) -> float:
        return self._clock.now() / _NANOS

    def call_soon(self, callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context=context)
        self._ready.append(handle)
        return handle

    call_soon_threadsafe = call_soon

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        return self.call_at(self.time() + delay, callback, *args, context=context)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.TimerHandle:
        handle = asyncio.TimerHandle(when, callback, args, self, context=context)
        heapq.heappush(self._timers, (when, next(self._order), handle))
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        pass

    def create_future(self) -> asyncio.Future:
        return asyncio.Future(loop=self)

    def create_task(self, coro: Any, *, name: Optional[str] = None, context: Any = None) -> asyncio.Task:
        return asyncio.Task(coro, loop=self, name=name, context=context)

    # -- errors and debugging ------------------------------------------------

    def get_debug(self) -> bool:
        return False

    def set_debug(self, enabled: bool) -> None:
        pass

    def get_exception_handler(self) -> Optional[Callable[..., Any]]:
        return self._exception_handler

    def set_exception_handler(self, handler: Optional[Callable[..., Any]]) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict) -> None:
        message = context.get("message", "unhandled exception in the event loop")
        exception = context.get("exception")
        print(message, file=sys.stderr)
        if exception is not None:
            traceback.print_exception(exception, file=sys.stderr)

    def call_exception_handler(self, context: dict) -> None:
        if self._exception_handler is not None:
            self._exception_handler(self, context)
        else:
            self.default_exception_handler(context)


#: Makes the clock `run` uses by default (the tests swap in a simulated one).
default_clock: Callable[[], Clock] = WasiClock


def run(coroutine: Awaitable[T], clock: Optional[Clock] = None) -> T:
    """Runs `coroutine` to completion on a fresh `PollLoop`."""
    loop = PollLoop(clock if clock is not None else default_clock())
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


def current() -> PollLoop:
    """The running `PollLoop` (inside a connector call)."""
    loop = events.get_running_loop()
    if not isinstance(loop, PollLoop):
        raise RuntimeError("wasi:http calls need the component's event loop: run them inside a connector call")
    return loop

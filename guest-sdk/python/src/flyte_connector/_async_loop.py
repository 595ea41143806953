"""componentize-py's event loop, completed for connector calls (the async
world; the sync world runs on `_loop.PollLoop`).

componentize-py runs each call of an async export as a Component Model
task: the generated `async def` runs as an asyncio task on the loop of its
module `componentize_py_async_support`, in a `contextvars.Context` of the
call's own, and awaiting an async import suspends the call until the host
answers while the instance serves its other calls. That loop runs ready
callbacks, tasks and futures, but has no clock and no timers (`time`,
`call_at` and `call_later` raise NotImplementedError), and an exception it
is told of (one never retrieved from a task) traps the instance, failing
every call it serves. `install` completes it:

- `loop.time()` reads wasi:clocks/monotonic-clock, in seconds;
- `call_soon` takes a callback without a context, as asyncio's own loops
  do (the current one; componentize-py's refuses it, and `asyncio.timeout`
  gives none for a deadline already past);
- a timer (`call_at`, `call_later`) is a coroutine spawned into the calling
  call's task, awaiting `waits.sleep`, then running the callback unless the
  timer was cancelled meanwhile: so `asyncio.sleep`, `asyncio.wait_for`
  and `asyncio.timeout` work as written. A host sleep cannot be cancelled,
  so a cancelled timer's coroutine waits on, and does nothing, when its
  time comes or its call ends (the host ends a call's sleeps when it
  returns). A timer still set when its call returned ends then too, and
  the task that set it (one the call left running) is cancelled;
- what asyncio tells the loop's exception handler is written to the call's
  log instead of trapping the instance.

A call the host gives up (its deadline passed, its client went away) has
its waits end at once: `waits.send` fails with `cancelled`, `waits.sleep`
answers `call-ended`, `call.time-left` is 0. The SDK raises
`asyncio.CancelledError` where the call waits (`give_up`): the coroutine
that waited and the call's own task are cancelled, so the connector's
`finally` blocks run and the call unwinds to `_dispatch`, which answers with
an error nobody reads (the host has answered the client).

An async import is awaited through `host_wait`, so that cancelling its
awaiter (a timeout, a give-up) never cancels the import's own future:
componentize-py cannot cancel a subtask, and the answer arriving for a
cancelled future would trap the instance. The wait runs on, counted in the
call's task, until the host answers it, and the answer is dropped.

Calls share the module but not their tasks: a call cannot wake another (the
loop runs a call's callbacks only when the host resumes that call), so no
asyncio future, lock or event is shared between calls.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import sys
import traceback
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Optional, TypeVar

T = TypeVar("T")

_NANOS = 1_000_000_000

#: Why the tasks of a call given up are cancelled.
GIVEN_UP = "the call was given up by the host"


@dataclass
class _World:
    """What `install` patched the loop with."""

    loop: Any
    #: The generated `connector_waits` (send, sleep, log, SleepEnd).
    waits: Any
    #: The generated `monotonic_clock` (now).
    clock: Any
    #: `componentize_py_async_support.spawn`: runs a coroutine as part of
    #: the current call's task, which lives until the coroutine ends.
    spawn: Callable[[Awaitable[Any]], None]


_world: Optional[_World] = None


@dataclass
class _Call:
    """The call a task belongs to."""

    #: The task of the export call (componentize-py's), the one a give-up
    #: cancels so that the whole call unwinds.
    root: Optional[asyncio.Task]


_call: ContextVar[_Call] = ContextVar("flyte_connector_call")


def install() -> None:
    """Gives componentize-py's loop a clock, timers and an exception
    handler that does not trap (see the module doc). The async world's
    export (`_guest_async`) calls it when the build imports it."""
    global _world
    import componentize_py_async_support as support
    from wit_world.imports import connector_waits, monotonic_clock

    loop = support._loop
    _world = _World(loop=loop, waits=connector_waits, clock=monotonic_clock, spawn=support.spawn)
    # Instance attributes, so plain functions (no `self`).
    loop.call_soon = _call_soon
    loop.time = _time
    loop.call_at = _call_at
    loop.call_later = _call_later
    loop._timer_handle_cancelled = _timer_handle_cancelled
    loop.call_exception_handler = _report


def installed() -> bool:
    """Whether this is the async world (its loop completed by `install`)."""
    return _world is not None


def _installed() -> _World:
    if _world is None:
        raise RuntimeError("the async world's event loop is not installed")
    return _world


# -- calls -------------------------------------------------------------------


async def serve(answer: Awaitable[T]) -> T:
    """Awaits a call's `_dispatch` coroutine as the call's own task: the
    one a give-up cancels."""
    _call.set(_Call(root=asyncio.current_task()))
    return await answer


def give_up(waiter: Optional[asyncio.Task] = None) -> None:
    """The host gave the running call up (or it returned, and `waiter`
    still waits): cancels `waiter` (the task that waited, when not the
    running one, which raises `CancelledError` itself) and the call's own
    task, so every coroutine of the call unwinds."""
    call = _call.get(None)
    running = asyncio.current_task()
    cancelled = []
    for task in (waiter, call.root if call is not None else None):
        if task is None or task is running or task.done() or task in cancelled:
            continue
        task.cancel(GIVEN_UP)
        cancelled.append(task)


async def host_wait(start: Callable[[], Awaitable[T]]) -> T:
    """What the async import `start()` answers (or raises), awaited so that
    cancelling the awaiting coroutine leaves the import's own wait alone
    (see the module doc): the wait runs in a coroutine spawned into the
    call's task, and hands its outcome over unless nobody waits any more."""
    world = _installed()
    outcome: asyncio.Future = world.loop.create_future()

    async def wait() -> None:
        try:
            value = await start()
        except BaseException as error:  # noqa: BLE001 (it must not escape: that traps the instance)
            if not outcome.done():
                if isinstance(error, asyncio.CancelledError):
                    outcome.cancel()
                else:
                    outcome.set_exception(error)
        else:
            if not outcome.done():
                outcome.set_result(value)

    _spawn(world, wait())
    return await outcome


def _spawn(world: _World, coroutine: Any) -> None:
    try:
        world.spawn(coroutine)
    except LookupError:  # componentize-py keeps the call's task in the context
        coroutine.close()
        raise RuntimeError("timers and host waits work only inside a connector call") from None


# -- the loop's clock and timers ---------------------------------------------


def _call_soon(callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.Handle:
    loop = _installed().loop
    # componentize-py's own, given the context it requires.
    if context is None:
        context = contextvars.copy_context()
    return type(loop).call_soon(loop, callback, *args, context=context)


def _time() -> float:
    return _installed().clock.now() / _NANOS


def _call_later(delay: float, callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.TimerHandle:
    return _call_at(_time() + delay, callback, *args, context=context)


def _call_at(when: float, callback: Callable[..., Any], *args: Any, context: Any = None) -> asyncio.TimerHandle:
    world = _installed()
    handle = asyncio.TimerHandle(when, callback, args, world.loop, context=context)
    # Rounded up: a timer must not fire before it is due.
    nanos = max(0, math.ceil((when - _time()) * _NANOS))
    _spawn(world, _fire(world, handle, nanos, asyncio.current_task(world.loop)))
    return handle


async def _fire(world: _World, handle: asyncio.TimerHandle, nanos: int, waiter: Optional[asyncio.Task]) -> None:
    """Runs `handle` once `nanos` have passed, unless it was cancelled;
    when the call ended first, the task that set the timer waits in vain,
    so it is cancelled, with the call's."""
    try:
        end = await world.waits.sleep(nanos)
    except BaseException as error:  # noqa: BLE001 (it must not escape: that traps the instance)
        _report({"message": "a timer's sleep failed; the call is given up", "exception": error})
        end = None
    if handle.cancelled():
        return
    if end != world.waits.SleepEnd.ELAPSED:
        give_up(waiter)
        return
    handle._run()


def _timer_handle_cancelled(handle: asyncio.TimerHandle) -> None:
    """A cancelled timer is skipped when its sleep ends (`_fire`)."""


def _report(context: dict) -> None:
    """The loop's exception handler: what asyncio reports (a task's
    exception never retrieved, a callback that raised) goes to the call's
    log; componentize-py's would trap the instance."""
    print(context.get("message") or "unhandled exception in the event loop", file=sys.stderr)
    exception = context.get("exception")
    if exception is not None:
        traceback.print_exception(exception, file=sys.stderr)

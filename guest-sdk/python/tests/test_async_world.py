"""The async world under plain CPython: componentize-py's own event loop,
completed by `_async_loop` (timers through `waits.sleep`, a clock), serving
calls of the async export on a component host (`component_host`), several
at once, as the host runs them: timers, a call given up, failures that must
never leave an export (they would trap the instance), and each call's log."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Dict

import pytest

from component_host import SECOND, Host
from flyte_connector import AsyncConnector, ConnectorRegistry, Resource, ResourceMeta, TaskExecution

Script = Callable[[], Awaitable[Any]]


@dataclass
class ScriptMeta(ResourceMeta):
    script: str


class Scripted(AsyncConnector):
    """A connector whose `get` runs the script its meta names and reports
    what the script returns as the resource's message."""

    name = "Scripted"
    task_type_name = "scripted"
    metadata_type = ScriptMeta
    scripts: Dict[str, Script] = {}

    async def create(self, task_template, output_prefix, inputs=None, **kwargs):
        return ScriptMeta(script="")

    async def get(self, resource_meta, **kwargs):
        message = await self.scripts[resource_meta.script]()
        return Resource(phase=TaskExecution.SUCCEEDED, message=str(message))

    async def delete(self, resource_meta, **kwargs):
        return None


#: `_dispatch.CANCELLED`, the answer of a call given up, spelt out for
#: `parametrize`, which runs before the bindings `_dispatch` imports exist
#: (`host` checks the two agree).
CANCELLED = "the call was cancelled (its deadline passed or its client went away)"


@pytest.fixture
def host(component):
    """The component host, serving `Scripted`."""
    from flyte_connector import _dispatch

    assert _dispatch.CANCELLED == CANCELLED
    ConnectorRegistry._clear()
    ConnectorRegistry.register(Scripted())
    Scripted.scripts = {}
    yield component
    ConnectorRegistry._clear()


def start(host: Host, name: str, script: Script):
    """Starts a `get` call of the async export that runs `script`."""
    from wit_world.imports import connector_types as wit

    Scripted.scripts[name] = script
    request = wit.GetRequest(wit.TaskCategory("scripted", 0), ScriptMeta(script=name).encode(), "", [])
    return host.start(host.guest.AsyncConnector().get(request), name)


def message(call) -> str:
    return call.result().message


def failure(call) -> str:
    from componentize_py_types import Err

    with pytest.raises(Err) as raised:
        call.result()
    assert type(raised.value.value).__name__ == "Error_Failed"
    return raised.value.value.value


def now() -> float:
    return asyncio.get_running_loop().time()


# -- timers --------------------------------------------------------------------


def test_asyncio_sleep_waits_on_the_host_and_the_clock_reads_it(host):
    async def script():
        start = now()
        await asyncio.sleep(0.5)
        return now() - start

    call = start(host, "sleep", script)
    host.run()
    assert float(message(call)) == pytest.approx(0.5)
    assert host.sleeps == [("sleep", SECOND // 2)]
    assert call.exited_ns == call.returned_ns


def test_gathered_sleeps_overlap(host):
    async def script():
        start = now()
        await asyncio.gather(asyncio.sleep(0.5), asyncio.sleep(0.2))
        return now() - start

    call = start(host, "gather", script)
    host.run()
    assert float(message(call)) == pytest.approx(0.5)


def test_wait_for_and_timeout_end_a_slow_wait(host):
    async def script():
        start = now()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await asyncio.sleep(10)
        with pytest.raises(TimeoutError):  # a deadline already past: no timer, a callback soon
            async with asyncio.timeout_at(now()):
                await asyncio.sleep(10)
        return now() - start

    call = start(host, "timeouts", script)
    host.run()
    assert float(message(call)) == pytest.approx(0.3)
    # The abandoned sleeps end when the call returns: it does not linger 10 s.
    assert call.exited_ns == call.returned_ns


def test_a_cancelled_timer_never_fires(host):
    fired = []

    async def script():
        loop = asyncio.get_running_loop()
        late = loop.call_later(1.0, fired.append, "late")
        late.cancel()
        loop.call_later(0.1, fired.append, "early")
        loop.call_at(loop.time() + 0.05, fired.append, "at")
        await asyncio.sleep(2)
        return "slept"

    call = start(host, "cancelled", script)
    host.run()
    assert message(call) == "slept"
    assert fired == ["at", "early"]


# -- calls given up --------------------------------------------------------------


def test_a_call_given_up_while_it_sleeps_unwinds_and_answers_an_error(host):
    unwound = []

    async def script():
        try:
            await asyncio.sleep(60)
        finally:
            unwound.append(now())

    call = start(host, "given up", script)
    host.run(until=1)
    host.give_up(call)
    host.run()
    assert failure(call) == CANCELLED
    assert unwound == [pytest.approx(11.0)]  # the host clock starts at 10 s
    assert call.exited_ns == 11 * SECOND


def test_a_call_given_up_cancels_its_gathered_children_and_its_own_task(host):
    cancelled = []

    async def child(name: str, seconds: float) -> None:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def script():
        # Its own task waits on an event no one sets; only its children wait on the host.
        never = asyncio.Event()
        background = asyncio.get_running_loop().create_task(child("background", 30))
        try:
            await asyncio.gather(child("a", 60), child("b", 90), never.wait())
        finally:
            cancelled.append("own")
            await asyncio.sleep(0)
            assert background.done()

    call = start(host, "children", script)
    host.run(until=1)
    host.give_up(call)
    host.run()
    assert failure(call) == CANCELLED
    assert sorted(cancelled) == ["a", "b", "background", "own"]


# -- nothing leaves an export ----------------------------------------------------


class Stop(BaseException):
    """Neither an Exception nor anything asyncio knows."""


@pytest.mark.parametrize(
    "raised,answer",
    [
        (SystemExit(3), "SystemExit: 3"),
        (KeyboardInterrupt(), "KeyboardInterrupt"),
        (Stop("here"), "test_async_world.Stop: here"),
        (asyncio.CancelledError(), CANCELLED),
    ],
)
def test_no_exception_leaves_the_export_and_other_calls_go_on(host, raised, answer):
    async def fails():
        await asyncio.sleep(0.1)
        raise raised

    async def goes_on():
        await asyncio.sleep(0.5)
        return "fine"

    failing = start(host, "fails", fails)
    other = start(host, "goes on", goes_on)
    host.run()  # no Trap
    assert failure(failing) == answer
    assert message(other) == "fine"


def test_a_task_exception_never_retrieved_is_logged_not_a_trap(host):
    async def fails():
        raise KeyError("run_id")

    async def script():
        asyncio.get_running_loop().create_task(fails())
        await asyncio.sleep(0.1)
        gc.collect()  # the task is dropped unawaited: asyncio reports its exception
        return "fine"

    call = start(host, "orphan", script)
    host.run()
    assert message(call) == "fine"
    assert "exception was never retrieved" in call.log and "KeyError: 'run_id'" in call.log


# -- concurrent calls --------------------------------------------------------------


def test_concurrent_calls_interleave_and_keep_their_own_logs(host):
    async def slow():
        print("slow starts")
        await asyncio.sleep(1)
        print("slow ends")
        return "slow"

    async def quick():
        logging.getLogger("quick").warning("quick starts")
        await asyncio.sleep(0.5)
        print("quick ends")
        return "quick"

    handler = logging.StreamHandler(host.streams[1])  # as one made after the build replaced the streams
    logging.getLogger("quick").addHandler(handler)
    try:
        slow_call = start(host, "slow", slow)
        quick_call = start(host, "quick", quick)
        host.run()
    finally:
        logging.getLogger("quick").removeHandler(handler)
    assert (message(slow_call), message(quick_call)) == ("slow", "quick")
    assert quick_call.returned_ns < slow_call.returned_ns
    assert slow_call.log == "slow starts\nslow ends\n"
    assert quick_call.log == "quick starts\nquick ends\n"


def test_before_the_instance_serves_calls_the_streams_write_where_they_did(host):
    # As while the build runs the modules: there is no host to call then.
    print("while building", file=host.streams[0])
    assert host.stdout.getvalue() == "while building\n"
    call = start(host, "call", lambda: asyncio.sleep(0, "slept"))
    host.run()
    assert message(call) == "slept"
    print("in a call", file=host.streams[0])
    assert host.stdout.getvalue() == "while building\n"


def test_a_failures_traceback_goes_to_the_calls_log(host):
    async def script():
        return {}["run_id"]

    call = start(host, "bug", script)
    host.run()
    assert failure(call) == "KeyError: 'run_id'"
    assert "Traceback" in call.log and "KeyError: 'run_id'" in call.log
    assert host.stderr.getvalue() == ""

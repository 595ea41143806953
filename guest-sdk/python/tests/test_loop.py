"""The SDK's event loop under plain CPython, on a simulated clock and poller."""

from __future__ import annotations

import asyncio
from typing import List

import pytest

from flyte_connector import _loop


class Timer:
    def __init__(self, when: int) -> None:
        self.when = when


class Ready:
    """An I/O pollable, ready at the `after`-th poll that includes it
    (earlier polls return a timer or nothing)."""

    def __init__(self, after: int) -> None:
        self.after = after


class FakeClock:
    """Time moves only when the loop blocks on a timer."""

    def __init__(self) -> None:
        self.now_ns = 1_000_000_000
        self.polls = 0

    def now(self) -> int:
        return self.now_ns

    def subscribe_instant(self, when: int) -> Timer:
        return Timer(when)

    def poll(self, pollables: List[object]) -> List[int]:
        self.polls += 1
        ready = []
        for index, pollable in enumerate(pollables):
            if isinstance(pollable, Ready):
                pollable.after -= 1
                if pollable.after <= 0:
                    ready.append(index)
        if not ready:
            timers = [(p.when, i) for i, p in enumerate(pollables) if isinstance(p, Timer)]
            assert timers, "blocked with nothing that can become ready"
            when, index = min(timers)
            self.now_ns = max(self.now_ns, when)
            ready.append(index)
        return ready


def test_gathered_sleeps_overlap():
    clock = FakeClock()

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        results = await asyncio.gather(asyncio.sleep(0.5, "a"), asyncio.sleep(0.2, "b"))
        return results, loop.time() - start

    results, elapsed = _loop.run(main(), clock)
    assert results == ["a", "b"]
    assert elapsed == pytest.approx(0.5)


def test_a_coroutine_awaits_a_pollable_while_timers_fire():
    clock = FakeClock()
    pollable = Ready(after=3)
    ticks = []

    async def ticker():
        while True:
            await asyncio.sleep(0.1)
            ticks.append(asyncio.get_running_loop().time())

    async def main():
        task = asyncio.get_running_loop().create_task(ticker())
        await _loop.current().wait_for(pollable)
        task.cancel()
        return "done"

    assert _loop.run(main(), clock) == "done"
    assert clock.polls == 3
    assert ticks == [pytest.approx(1.1), pytest.approx(1.2)]


def test_exceptions_propagate_and_cancelled_timers_do_not_fire():
    clock = FakeClock()
    fired = []

    async def main():
        loop = asyncio.get_running_loop()
        handle = loop.call_later(1.0, fired.append, "late")
        handle.cancel()
        loop.call_later(0.1, fired.append, "early")
        await asyncio.sleep(0.2)
        raise KeyError("run_id")

    with pytest.raises(KeyError):
        _loop.run(main(), clock)
    assert fired == ["early"]


def test_wait_for_with_a_timeout_cancels_the_slow_coroutine():
    clock = FakeClock()

    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(10), timeout=0.1)
        return asyncio.get_running_loop().time()

    assert _loop.run(main(), clock) == pytest.approx(1.1)


def test_a_wait_with_a_deadline_ends_with_whichever_comes_first():
    clock = FakeClock()

    async def main():
        loop = _loop.current()
        start = loop.time()
        never = await loop.wait_for(Ready(after=10**9), start + 0.5)
        at = loop.time()
        soon = await loop.wait_for(Ready(after=1), loop.time() + 0.5)
        past = await loop.wait_for(Ready(after=10**9), start)
        return never, at - start, soon, past, loop.time() - start

    never, at, soon, past, end = _loop.run(main(), clock)
    assert (never, soon, past) == (False, True, False)
    assert at == pytest.approx(0.5)
    assert end == pytest.approx(0.5)  # a ready pollable and a passed deadline do not wait


def test_a_wait_lets_go_of_its_pollable_when_it_ends():
    """wasi refuses to drop a stream while a pollable of it lives, so the
    loop must not keep one past its wait, done or cancelled."""
    clock = FakeClock()

    async def main():
        loop = _loop.current()
        await loop.wait_for(Ready(after=1), loop.time() + 1)
        await loop.wait_for(Ready(after=10**9), loop.time() + 0.1)

        async def waits_for_ever():
            await loop.wait_for(Ready(after=10**9))

        waiting = loop.create_task(waits_for_ever())
        await asyncio.sleep(0.1)
        waiting.cancel()
        await asyncio.sleep(0)
        return list(loop._waiting)

    assert _loop.run(main(), clock) == []


def test_awaiting_what_can_never_finish_is_an_error_not_a_hang():
    async def main():
        await asyncio.get_running_loop().create_future()

    with pytest.raises(RuntimeError, match="never finish"):
        _loop.run(main(), FakeClock())


def test_current_outside_a_call_says_so():
    with pytest.raises(RuntimeError):
        _loop.current()

import asyncio

import pytest

from flyte_connector import cache


@pytest.fixture(autouse=True)
def empty_cache():
    cache.clear()
    yield
    cache.clear()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_value_is_made_once_while_young_and_again_after_its_ttl():
    clock, made = Clock(), []

    def make():
        made.append(1)
        return len(made)

    assert cache.get_or_make("k", make, ttl_seconds=10, clock=clock) == 1
    clock.now = 9.9
    assert cache.get_or_make("k", make, ttl_seconds=10, clock=clock) == 1
    clock.now = 10
    assert cache.get_or_make("k", make, ttl_seconds=10, clock=clock) == 2
    assert cache.get_or_make("other", make, clock=clock) == 3


def test_errors_are_not_cached_and_async_makers_work():
    def fail():
        raise RuntimeError("no token today")

    with pytest.raises(RuntimeError):
        cache.get_or_make("k", fail)

    async def make():
        return "token"

    assert asyncio.run(cache.get_or_make_async("k", make, ttl_seconds=60)) == "token"
    assert cache.get_or_make("k", fail) == "token"


def test_the_cache_keeps_at_most_its_capacity():
    for n in range(cache.CAPACITY + 5):
        cache.get_or_make(n, lambda n=n: n)
    assert len(cache._entries) == cache.CAPACITY
    assert cache.get_or_make(0, lambda: "made again") == "made again"
    assert cache.get_or_make(cache.CAPACITY + 4, lambda: "made again") == cache.CAPACITY + 4


def test_calls_that_interleave_each_get_a_whole_value_and_the_last_made_is_kept():
    """As calls of the async world run at once in one instance: both miss,
    each makes its own value (neither waits on the other's), and the cache
    keeps the one made last."""
    clock, order = Clock(), []

    async def call(name: str, delay: float):
        async def make():
            order.append(f"{name} makes")
            await asyncio.sleep(delay)
            return f"token of {name}"

        return await cache.get_or_make_async("token", make, ttl_seconds=60, clock=clock)

    async def both():
        return await asyncio.gather(call("slow", 0.02), call("quick", 0.01))

    assert asyncio.run(both()) == ["token of slow", "token of quick"]
    assert order == ["slow makes", "quick makes"]
    assert cache.get_or_make("token", lambda: "made again", clock=clock) == "token of slow"

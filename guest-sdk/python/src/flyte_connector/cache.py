"""Values worth keeping from one call to the next: a token with its expiry,
a client built from the connection's secrets.

The cache lives in the connector's instance. By default every call runs in a
fresh instance, so it starts empty in each call and a value is made once per
call, as without it. When the plugin's manifest opts into
`instance_reuse = "connection"`, an instance serves later calls with the
very same connection map (secrets and configs) and no others, so what one
call cached is found by the next calls of that connection only. The same
holds for a connector's own module globals and `functools.lru_cache`.

In the async world (the default build) the host may also run several calls
of one tenant in one instance at once; they share the cache as they share
the module. Each sees a whole value or none: the cache is only read and
written between awaits. Calls that miss the same key together each make the
value (none waits on another's `make`: a call cannot wake another), and the
last one made is kept.

    from flyte_connector import cache

    async def token(secret: str) -> str:
        return await cache.get_or_make_async(
            ("my-token", secret), lambda: fetch_token(secret), ttl_seconds=3000
        )

A failed `make` is not cached. At most `CAPACITY` values are kept; beyond
that the oldest goes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Awaitable, Callable, Hashable, Optional, Tuple, TypeVar

T = TypeVar("T")

#: Values kept at most.
CAPACITY = 64

# key -> (monotonic time it must be made again at, or None; value)
_entries: "OrderedDict[Hashable, Tuple[Optional[float], Any]]" = OrderedDict()


def _found(key: Hashable, now: float) -> Tuple[bool, Any]:
    entry = _entries.get(key)
    if entry is None:
        return False, None
    refresh_at, value = entry
    if refresh_at is not None and now >= refresh_at:
        del _entries[key]
        return False, None
    return True, value


def _keep(key: Hashable, value: Any, now: float, ttl_seconds: Optional[float]) -> None:
    _entries.pop(key, None)
    while len(_entries) >= CAPACITY:
        _entries.popitem(last=False)
    _entries[key] = (None if ttl_seconds is None else now + ttl_seconds, value)


def get_or_make(key: Hashable, make: Callable[[], T], ttl_seconds: Optional[float] = None, clock: Callable[[], float] = time.monotonic) -> T:
    """The value cached under `key` if it is younger than `ttl_seconds`
    (forever when None), else what `make()` returns, cached."""
    now = clock()
    found, value = _found(key, now)
    if found:
        return value
    value = make()
    _keep(key, value, now, ttl_seconds)
    return value


async def get_or_make_async(key: Hashable, make: Callable[[], Awaitable[T]], ttl_seconds: Optional[float] = None, clock: Callable[[], float] = time.monotonic) -> T:
    """`get_or_make` for a coroutine function `make`."""
    now = clock()
    found, value = _found(key, now)
    if found:
        return value
    value = await make()
    _keep(key, value, now, ttl_seconds)
    return value


def clear() -> None:
    """Empties the cache (for tests)."""
    _entries.clear()

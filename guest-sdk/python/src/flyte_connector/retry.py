"""When `flyte_connector.http` repeats a request. The Rust SDK keeps the
same rules; `wit/fixtures/http.json` (`retry`) fixes them and both SDKs'
tests check them:

- what is repeated: a request safe to repeat (GET, HEAD, OPTIONS, PUT,
  DELETE; a POST or PATCH only when sent with `idempotent=True`) whose
  attempt was throttled or found the service unavailable (429, 502, 503,
  504), or failed before anything was sent (`DNS-timeout`,
  `connection-refused`, `connection-timeout`);
- how often: at most `Retry.max_retries` times per request, and
  `CALL_BUDGET` times per call across its requests;
- when: after the service's `Retry-After` (seconds or an HTTP date), else
  after a jittered exponential backoff (`Retry.backoff_bounds`);
- within the call's deadline: the last part of the time left when the
  request was first sent is kept for the answer (`reserve`); a retry whose
  wait and a shortest attempt would not end before it is not made, and
  every attempt's timeout ends before it. When retries are spent, the last
  attempt's answer (a 429 `Response`) or error is the request's.
"""

from __future__ import annotations

import calendar
import dataclasses
import re
from contextvars import ContextVar
from typing import Optional, Tuple

__all__ = ["CALL_BUDGET", "NO_RETRY", "Retry"]

#: Statuses retried: throttled, or the service unavailable.
STATUSES = frozenset([429, 502, 503, 504])
#: wasi:http error codes (WIT case names) of failures before anything was sent.
ERROR_CODES = frozenset(["DNS-timeout", "connection-refused", "connection-timeout"])
#: Methods repeated without being marked idempotent.
SAFE_METHODS = frozenset(["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
#: Retries one call may make across all its requests.
CALL_BUDGET = 8
#: The shortest attempt a retry must leave time for, in seconds.
MIN_ATTEMPT = 0.1
#: The most of the call's time kept for the answer, in seconds.
_MAX_RESERVE = 1.0


@dataclasses.dataclass(frozen=True)
class Retry:
    """How a request is repeated (seconds). The default: four retries, the
    first after 0.125 to 0.25 s, each range doubling up to 4 to 8 s."""

    max_retries: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0

    def backoff_bounds(self, attempt: int) -> Tuple[float, float]:
        """The shortest and longest wait before retry `attempt` (1 for the
        first) when the service says nothing."""
        longest = min(self.base_delay * 2 ** min(max(attempt - 1, 0), 30), max(self.max_delay, self.base_delay))
        return longest / 2, longest

    def wait(self, attempt: int, random: float) -> float:
        """The wait before retry `attempt`, `random` in [0, 1) picking it
        within the bounds."""
        shortest, longest = self.backoff_bounds(attempt)
        return shortest + (longest - shortest) * random


#: No retries: the first attempt's answer or error is the request's.
NO_RETRY = Retry(max_retries=0)


def repeatable(method: str, idempotent: bool) -> bool:
    return idempotent or method in SAFE_METHODS


def retried_status(status: int) -> bool:
    return status in STATUSES


def retried_code(case: str) -> bool:
    return case in ERROR_CODES


def reserve(first_left: float) -> float:
    """The time kept for the answer out of `first_left`, the time the call
    had left when the request was first sent: a fifth, at most a second."""
    return min(first_left / 5, _MAX_RESERVE)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IMF_FIXDATE = re.compile(r"[A-Z][a-z]{2}, (\d{2}) ([A-Z][a-z]{2}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) GMT")


def retry_after(value: Optional[str], now: int) -> Optional[float]:
    """The wait (seconds) a `Retry-After` value asks for, `now` being the
    wall clock in seconds since the epoch: whole seconds, or an HTTP date
    (IMF-fixdate; one past is no wait). None when it is neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(int(value))
    match = _IMF_FIXDATE.fullmatch(value)
    if match is None or match.group(2) not in _MONTHS:
        return None
    day, month, year, hours, minutes, seconds = match.groups()
    if not (1 <= int(day) <= 31 and int(year) >= 1970 and int(hours) <= 23 and int(minutes) <= 59 and int(seconds) <= 60):
        return None
    at = calendar.timegm(
        (int(year), _MONTHS.index(month) + 1, int(day), int(hours), int(minutes), int(seconds), 0, 0, 0)
    )
    return float(max(at - now, 0))


class _CallRetries:
    """The running call's retries, across its requests."""

    def __init__(self) -> None:
        self.made = 0


#: The running call's retries. Calls of the async world share the module
#: but each runs in a context of its own, which the tasks it starts copy:
#: so a call's requests share one count, and no call sees another's.
_call_retries: ContextVar[_CallRetries] = ContextVar("flyte_connector_call_retries")


def begin_call() -> None:
    """Starts the running call's budget afresh."""
    _call_retries.set(_CallRetries())


def take_call_retry() -> bool:
    """Takes one retry of the call's budget, if any is left."""
    retries = _call_retries.get(None)
    if retries is None:
        begin_call()
        retries = _call_retries.get()
    made = retries.made
    retries.made = made + 1
    return made < CALL_BUDGET

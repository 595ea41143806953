"""Standard output and standard error of the async world's calls, written
through `waits.log`.

Calls of one instance run at once, so the host cannot tell whose lines the
plugin's standard error carries; `waits.log` acts for the call that makes
it (the component task running when it is called: whatever Python code
writes while a call runs, a callback or a finaliser included, is that
call's). `install` points `sys.stdout` and `sys.stderr` at a `CallLog`,
which writes through `waits.log` once the instance serves calls (`print`, a
traceback, a `logging.StreamHandler` made after the streams were replaced),
and to the stream it replaced before: while the build runs the modules,
there is no host to call. Text is passed on as written, never buffered
here: a buffer would mix the calls' lines; the host assembles each call's
lines.
"""

from __future__ import annotations

import io
import sys
from typing import Any, Callable

_serving = False


def serving() -> None:
    """Says the instance serves a call (each export calls it first): from
    now on, what is written goes to the running call's log."""
    global _serving
    _serving = True


class CallLog(io.TextIOBase):
    """A text stream writing to the running call's log (`log`), or to
    `outside` before the instance serves calls."""

    def __init__(self, outside: Any, log: Callable[[str], None]) -> None:
        super().__init__()
        self._outside = outside
        self._log = log

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "backslashreplace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not _serving:
            self._outside.write(text)
        elif text:
            self._log(text)
        return len(text)

    def flush(self) -> None:
        if not _serving:
            self._outside.flush()


def install() -> None:
    """Points `sys.stdout` and `sys.stderr` at the running call's log."""
    from wit_world.imports import connector_waits

    sys.stdout = CallLog(sys.stdout, connector_waits.log)
    sys.stderr = CallLog(sys.stderr, connector_waits.log)

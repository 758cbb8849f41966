"""What a long wait (an AWX job, a roll-out) says while it lasts: a live line on a terminal, rewritten in place at
every poll, or else a log line a minute. Actions call it with what they wait for, its state and since when; the
time shown is measured by the clock handed in, the one the waits themselves run on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TextIO

log = logging.getLogger("reconciler.progress")
EVERY = timedelta(minutes=1)
HINT = " — Ctrl-C leaves it to be resumed"


def elapsed(span: timedelta) -> str:
    """`45s`, `2m10s`, `1h05m`: short, and never split across lines."""
    seconds = max(int(span.total_seconds()), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Called as `progress(what, state, since)` at every poll of a wait.

    On a terminal (`live`), one line on `stream` is rewritten in place with a carriage return and padding (no
    escape codes, so NO_COLOR holds); `done()` blanks it. Otherwise each wait is logged at info on
    `reconciler.progress` when it starts and then once a minute, however often it polls."""

    def __init__(
        self, clock: Callable[[], datetime], *, stream: TextIO | None = None, live: bool = False, hint: str = HINT
    ) -> None:
        self._clock, self._stream, self._live, self._hint = clock, stream, live and stream is not None, hint
        self._logged: dict[str, datetime] = {}  # what is waited for -> when it was last logged
        self._width = 0  # the length of the live line now shown
        self._lock = threading.Lock()  # waits of several watches run at once

    def __call__(self, what: str, state: str, since: datetime) -> None:
        now = self._clock()
        line = f"waiting for {what} ({state}, {elapsed(now - since)})"
        with self._lock:
            if self._live:
                assert self._stream is not None
                text = line + self._hint
                self._stream.write("\r" + text.ljust(self._width))
                self._stream.flush()
                self._width = len(text)
                return
            last = self._logged.get(what)
            if last is None or now - last >= EVERY:
                self._logged[what] = now
                log.info("%s", line)

    def done(self) -> None:
        """Blank the live line, so that what is printed next starts on a clean line."""
        with self._lock:
            if self._live and self._width and self._stream is not None:
                self._stream.write("\r" + " " * self._width + "\r")
                self._stream.flush()
                self._width = 0

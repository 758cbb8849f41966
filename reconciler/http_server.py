"""The endpoints' HTTP server for the daemon: waitress, serving in a thread of its own, and stopped without a
traceback in the log.

Waitress has no way to stop from another thread. Two races show up under load, each as a traceback that waitress
logs itself (`OSError: [Errno 9] Bad file descriptor`). This module avoids both:
- a request that finishes after the server closed writes to the server's closed trigger: the requests being served
  end first;
- the socket closed from another thread while the server's loop accepts a connection on it: the socket is closed
  by that loop itself, through its trigger (waitress's way to run a callable in the loop's thread).
"""

from __future__ import annotations

import threading
from typing import Any

from waitress.server import create_server

from reconciler import errors

THREADS = 4  # requests served at once
REQUESTS_END = 2.0  # seconds a stop waits for the requests being served
LOOP_CLOSES = 1.0  # seconds a stop waits for the loop to close the socket, before closing it from here


class HttpServer:
    """Listens from construction (a port that cannot be used is a configuration error); serves once started."""

    def __init__(self, app: Any, *, host: str, port: int) -> None:
        try:
            self._server: Any = create_server(app, host=host, port=port, threads=THREADS, ident="reconciler")
        except (OSError, ValueError) as exc:  # in use (another daemon?), not bindable, or no such host (waitress)
            raise errors.ConfigError(
                f"server.listen: cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        self._stopping = threading.Event()
        self._loop: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def start(self) -> None:
        self._loop = threading.Thread(target=self._serve, name="http", daemon=True)
        self._loop.start()

    def _serve(self) -> None:
        """Serve until stopped. A socket closed while the loop waits in select() may make that select fail (EBADF):
        that is how it ends, not an error to report."""
        try:
            self._server.run()
        except (OSError, ValueError):
            if not self._stopping.is_set():
                raise

    def stop(self) -> None:
        self._stopping.set()
        self._server.task_dispatcher.shutdown(timeout=REQUESTS_END)
        closed = threading.Event()

        def close() -> None:
            self._server.close()
            closed.set()

        if self._loop is not None and self._loop.is_alive():
            self._server.trigger.pull_trigger(close)
        if not closed.wait(timeout=LOOP_CLOSES if self._loop else 0):  # no loop (any more): nothing accepts on it
            self._server.close()

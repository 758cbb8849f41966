"""The endpoints' HTTP server for the daemon: waitress, serving in a thread of its own, and stopped without a
traceback in the log.

Waitress has no way to stop from another thread, and each way of getting it wrong shows up under load as a
traceback that waitress logs itself (`OSError: [Errno 9] Bad file descriptor`):
- The listening socket closed from another thread while the server's loop accepts a connection on it. So it is
  closed by that loop itself, through the server's trigger (waitress's way to run a callable in the loop's thread).
- The trigger, a pipe, closed while something still writes to it to wake the loop: a request that ends (even
  one that outlived the stop's wait), or `pull_trigger` itself, whose write follows the callable's queueing. So
  the trigger is never closed; the loop stays with it until the process ends.
"""

from __future__ import annotations

import threading
from typing import Any

from waitress import wasyncore
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
        """No new connection (the listening socket closed by the loop), then the requests being served end, for
        at most REQUESTS_END; what is still queued is dropped."""
        self._stopping.set()
        closed = threading.Event()

        def close() -> None:
            self._close_socket()
            closed.set()

        looping = self._loop is not None and self._loop.is_alive()
        if looping:
            self._server.trigger.pull_trigger(close)
        if not closed.wait(timeout=LOOP_CLOSES if looping else 0):  # no loop (any more): nothing accepts on it
            self._close_socket()
        self._server.task_dispatcher.shutdown(timeout=REQUESTS_END)

    def _close_socket(self) -> None:
        """The listening socket alone: waitress's own `close` closes the trigger too."""
        wasyncore.dispatcher.close(self._server)

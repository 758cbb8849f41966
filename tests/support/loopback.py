"""An HTTP server on 127.0.0.1:<free port> in a daemon thread, for the in-process fakes (AWX, hub, token server).

Handlers reach the object that owns the server as `self.server.owner`.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Any = None


class LoopbackServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], *, owner: object, name: str) -> None:
        self._handler, self._owner, self._name = handler, owner, name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Start serving; returns the base URL, `http://127.0.0.1:<port>`."""
        server = _Server(("127.0.0.1", 0), self._handler)
        server.owner = self._owner
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name=self._name, daemon=True)
        self._thread.start()
        return f"http://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

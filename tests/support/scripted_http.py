"""A loopback HTTP server that answers whatever a test scripts, byte for byte: for fuzzing a client with answers no
faithful fake would give (a body nested 3,000 deep, a charset nobody knows, a header of 5,000 digits).

`answer(route)` picks the reply for a request: a function of (method, path) the test sets; unmatched requests get
404. Replies are sent as given, headers and all (Content-Length is added when absent). Owns its server thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any

from tests.support.loopback import LoopbackServer


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json"})


Route = Callable[[str, str], Reply | None]


class ScriptedHttp:
    def __init__(self) -> None:
        self.route: Route = lambda method, path: None
        self.requests: list[tuple[str, str]] = []
        self._http = LoopbackServer(_Handler, owner=self, name="scripted-http")
        self.base = ""

    def __enter__(self) -> ScriptedHttp:
        self.base = self._http.start()
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._http.stop()

    def answer(self, method: str, path: str) -> Reply:
        self.requests.append((method, path))
        return self.route(method, path) or Reply(404, b'{"detail": "Not found."}')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        owner: ScriptedHttp = self.server.owner  # type: ignore[attr-defined]
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = owner.answer(self.command, self.path)
        try:
            self.send_response_only(reply.status)
            headers = {k.lower(): v for k, v in reply.headers.items()}
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if "content-length" not in headers:
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, UnicodeEncodeError):
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

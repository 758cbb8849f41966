"""A loopback HTTP receiver for notifications: it records every request and answers `status`, and a test can make
it hang, go down and come back, to play a webhook receiver or an Apprise service (json://, form://) going wrong.

    with Receiver() as r:
        target.send(item)                      # to r.url + "/hook"
        [got] = r.wait_for(1)
        assert got.headers["x-reconciler-event"] == "failed" and got.json()["event"] == "failed"

- `status`: what it answers (settable at any time); a 3xx comes with `Location: /redirected`. Every answer closes
  its connection, so `down()` is seen by the very next request, even from a client that pools connections.
- `hang()`: requests are recorded, then held without an answer until `release()` (answered then) or `close()`
  or `down()` (dropped unanswered).
- `down()`: stop listening (connections refused) and drop the connections it holds; `up()` listens again on the
  same port.
- `wait_for(count)`: blocks until `count` requests arrived (no polling), or fails naming what did arrive.
An in-process ThreadingHTTPServer on 127.0.0.1 with daemon threads; `close()` (or leaving the `with`) ends it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl


class Headers(Mapping[str, str]):
    """Request headers, looked up case-insensitively (repeated headers are joined with ", ")."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for key, value in pairs:
            previous = self._items.get(key.lower())
            self._items[key.lower()] = (key, f"{previous[1]}, {value}" if previous else value)

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._items

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Received:
    method: str
    path: str  # with its query string
    headers: Mapping[str, str]  # case-insensitive
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        """The body as an urlencoded form, one value per key (the last)."""
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: Receiver


class Receiver:
    def __init__(self) -> None:
        self.status = 200
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._hanging = False
        self._generation = 0  # bumped by down() and close(): held requests of an older one are dropped
        self._closed = False
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self._listen()
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Receiver({self.url}, status={self.status}, received={len(self.received)})"

    def hang(self) -> None:
        with self._changed:
            self._hanging = True

    def release(self) -> None:
        with self._changed:
            self._hanging = False
            self._changed.notify_all()

    def down(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
        self._stop()

    def up(self) -> None:
        if self._server is None and not self._closed:
            self._listen()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """Every request received so far, once there are at least `count`."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.received) >= count, timeout):
                arrived = [f"{got.method} {got.path}" for got in self.received]
                raise AssertionError(f"expected {count} request(s) within {timeout:g}s, got {len(arrived)}: {arrived}")
            return list(self.received)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._generation += 1
            self._changed.notify_all()
        self._stop()

    def _listen(self) -> None:
        server = _Server(("127.0.0.1", self.port), _Handler)  # allow_reuse_address: the same port again after down()
        server.owner = self
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="receiver", daemon=True)
        self._thread.start()

    def _stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        with self._changed:
            connections = list(self._connections)
        for connection in connections:  # what a server going away does to the connections it had
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _arrived(self, got: Received) -> int | None:
        """Records a request; the status to answer, or None to drop it unanswered (held, then down or closed)."""
        with self._changed:
            self.received.append(got)
            self._changed.notify_all()
            generation = self._generation
            self._changed.wait_for(lambda: not self._hanging or self._generation != generation)
            return self.status if self._generation == generation else None

    def _track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._changed:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.owner._track(self.connection, open_=False)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self.close_connection = True
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        except (OSError, ValueError):
            return
        got = Received(self.command, self.path, Headers(list(self.headers.items())), body)
        status = self.server.owner._arrived(got)
        if status is None:
            return
        try:
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/redirected")
            self.send_header("Content-Length", "0")
            self.send_header("Connection", "close")
            self.end_headers()
        except OSError:  # the client gave up waiting
            pass

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

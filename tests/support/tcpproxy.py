"""A TCP proxy on 127.0.0.1:<free port> in front of a real server (PostgreSQL, the registry), that a test can
hold or cut, to play the network going wrong between reconciler and a real component.

- `hold()`: bytes stop flowing both ways (connections stay open; the peer just sees nothing, as on a stalled
  link); `release()` lets them flow again. `held_connections()` tells how many connections wait.
- `cut()`: every connection is reset and new ones are refused (the server went away); `restore()` accepts again.
Owns its listening socket and one thread per direction of each connection; `close()` ends everything.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from types import TracebackType

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._flowing = threading.Event()
        self._flowing.set()
        self._up = True
        self._closed = False
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket]] = []
        self._waiting = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._up:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                client.close()  # a reset, as from a host whose server is down
                continue
            try:
                server = socket.create_connection(self._target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._connections.append((client, server))
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([source], [], [], 0.05)
                if self._closed:
                    break
                if not ready:
                    continue
                data = source.recv(65536)
                if not data:
                    break
                if not self._flowing.is_set():
                    with self._lock:
                        self._waiting += 1
                    self._flowing.wait()
                    with self._lock:
                        self._waiting -= 1
                if not self._up:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def held_connections(self) -> int:
        with self._lock:
            return self._waiting

    def cut(self) -> None:
        self._up = False
        self._flowing.set()
        with self._lock:
            connections, self._connections = self._connections, []
        for pair in connections:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    sock.close()

    def restore(self) -> None:
        self._up = True

    def close(self) -> None:
        self._closed = True
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2)

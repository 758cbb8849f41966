"""The daemon's HTTP server (reconciler/http_server.py) stops without a traceback while it is being asked: its socket
is closed by its own loop, never while that loop accepts a connection on it. In-process, over real HTTP."""

from __future__ import annotations

import http.client
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from reconciler import http_server


def _app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def _closed_by(server: http_server.HttpServer) -> list[str]:
    """The names of the threads that close the server's listening socket."""
    names: list[str] = []
    close = server._close_socket

    def recorded() -> None:
        names.append(threading.current_thread().name)
        close()

    server._close_socket = recorded  # type: ignore[method-assign]
    return names


def _refused(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    except (urllib.error.URLError, ConnectionError):
        return True
    return False


def _stopped_while_asked() -> tuple[list[str], int]:
    """Start a server, have four clients ask it over and over, stop it once it has answered: (the threads that
    closed its socket, its port)."""
    server = http_server.HttpServer(_app, host="127.0.0.1", port=0)
    closed_by = _closed_by(server)
    server.start()
    answered = threading.Semaphore(0)
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            try:  # a request taken after the stop is never answered: the client gives up (the daemon's process ends)
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/", timeout=0.5).read()
                answered.release()
            except (OSError, http.client.HTTPException):
                pass  # stopped meanwhile

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    try:
        assert answered.acquire(timeout=10)  # being asked
        server.stop()
    finally:
        done.set()
        for asker in askers:
            asker.join()
    return closed_by, server.port


def test_stopped_while_four_clients_ask_the_socket_is_closed_by_its_loop_and_nothing_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    for _ in range(10):
        closed_by, port = _stopped_while_asked()
        assert closed_by == ["http"]
        assert _refused(port)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info], caplog.text


def test_a_server_never_started_is_closed_by_the_stop_itself() -> None:
    server = http_server.HttpServer(_app, host="127.0.0.1", port=0)  # listening, never started: no loop runs
    closed_by = _closed_by(server)
    server.stop()
    assert closed_by == [threading.current_thread().name]
    assert _refused(server.port)

"""SIGTERM while the endpoints are busy: the daemon stops cleanly, with no traceback from the HTTP server (a request
finishing after the server was closed used to make waitress log `OSError: [Errno 9] Bad file descriptor`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.awx import FakeAwx
from tests.support.daemon import AWX_TOKEN, configure, repo_of, wait_until
from tests.support.registry import LocalRegistry, push_schema2


@pytest.fixture
def awx() -> Iterator[FakeAwx]:
    with FakeAwx(token=AWX_TOKEN) as fake:
        fake.add_template("Staging Fragalysis Stack")
        yield fake


def test_sigterm_while_the_page_and_status_are_being_served_stops_without_a_traceback(
    tmp_path: Path, registry: LocalRegistry, awx: FakeAwx
) -> None:
    d = configure(tmp_path, registry, awx)
    push_schema2(registry.base, repo_of(d), "latest", label="one")
    d.start()
    done = threading.Event()

    def ask() -> None:
        while not done.is_set():
            d.get("/status")
            d.get("/")

    askers = [threading.Thread(target=ask) for _ in range(4)]
    for asker in askers:
        asker.start()
    try:
        wait_until("the start-up pass", lambda: d.status().get("deployed"))
        code, seconds = d.stop()
    finally:
        done.set()
        for asker in askers:
            asker.join()
    assert code == 0 and seconds < 10
    assert "Traceback" not in d.logs(), d.logs()[-2000:]

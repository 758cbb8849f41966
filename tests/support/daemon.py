"""`reconciler run` as a real subprocess, for the daemon tests: its configuration (the real registry, the fake AWX,
a short lease), start and stop, its endpoints, its log and the actions it recorded. Tests wait for the other process
to do something (`wait_until` polls a condition with a deadline); none sleeps to let time pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.awx import FakeAwx
from tests.support import rows
from tests.support.registry import LocalRegistry, free_port

AWX_TOKEN = "awx-daemon-token-77"
API_TOKEN = "api-token-for-post-reconcile"
HOOK_SECRET = "hook-secret-3f2a"

CONFIG = """
[reconciler]
database = "{database}"
interval = "{interval}"
jitter = "0s"
lease = "3s"

[server]
listen = "127.0.0.1:{port}"

[registries."docker.io"]
url = "{registry}"

[awx.production]
url = "{awx}"
token_env = "TEST_AWX_TOKEN"
poll = "20ms"

[[watch]]
name = "staging"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}" }}

[[watch]]
name = "frontend"
image = "{repo}-frontend"
tag = "latest"
"""


def wait_until(what: str, check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)  # polling another process; the condition, not the time, is awaited
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Daemon:
    config: Path
    port: int
    database: str
    proc: subprocess.Popen[str] | None = None
    log: Path = field(default_factory=Path)

    def start(self, *, without: tuple[str, ...] = ()) -> Daemon:
        """Start `reconciler run`; `without` names environment variables to leave unset (a secret not given)."""
        self.log = self.config.with_suffix(f".{time.monotonic_ns()}.log")
        env = {
            **os.environ,
            "TEST_AWX_TOKEN": AWX_TOKEN,
            "RECONCILER_API_TOKEN": API_TOKEN,
            "RECONCILER_WEBHOOK_SECRET": HOOK_SECRET,
        }
        for name in without:
            env.pop(name, None)
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "--config", str(self.config), "--log-format", "json", "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
        wait_until("the daemon to answer /healthz", lambda: self.get("/healthz")[0] == 200)
        return self

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def request(
        self, method: str, path: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=body, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (TimeoutError, urllib.error.URLError, ConnectionError):
            return 0, b""

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        return json.loads(body)["watches"][0] if code == 200 else {}

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=15)
        return code, time.monotonic() - started

    def logs(self) -> str:
        return self.log.read_text()

    def actions(self) -> list[dict[str, Any]]:
        return rows.actions(self.database)


def configure(
    tmp_path: Path,
    registry: LocalRegistry,
    awx: FakeAwx,
    *,
    database: str | None = None,
    interval: str = "1s",
    name: str = "config",
) -> Daemon:
    database = database or f"sqlite:///{tmp_path}/reconciler.db"
    port = free_port()
    repo = f"daemon/{tmp_path.name.lower().replace('_', '-')}"[:60]
    path = tmp_path / f"{name}.toml"
    path.write_text(
        CONFIG.format(database=database, interval=interval, port=port, registry=registry.base, awx=awx.base, repo=repo)
    )
    return Daemon(config=path, port=port, database=database)


def repo_of(d: Daemon) -> str:
    return d.config.read_text().split('image = "')[1].split('"')[0]

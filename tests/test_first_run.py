"""A newcomer's first run: the README's first command, `reconciler run` on the repository's own config.toml with no
secret set at all, watches, records and reports; and `/readyz` tells a daemon whose every check fails from one that
works. The real daemon process and the real registry (standing in for Docker Hub)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import wait_until
from tests.support.registry import LocalRegistry, free_port, push_schema2

REPO = Path(__file__).resolve().parent.parent
_SECRETS = ("RECONCILER_", "AWX_", "DOCKERHUB_", "TEST_AWX_", "GITHUB_")


class Run:
    def __init__(self, config: Path, port: int) -> None:
        self.config, self.port = config, port
        self.log = config.with_suffix(".log")
        env = {k: v for k, v in os.environ.items() if not k.startswith(_SECRETS)}
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reconciler.cli", "--config", str(config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=config.parent,
            )

    def get(self, path: str, method: str = "GET") -> tuple[int, str]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method, data=b"")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, ""

    def watches(self) -> dict[str, dict[str, object]]:
        code, body = self.get("/status")
        return {w["name"]: w for w in json.loads(body)["watches"]} if code == 200 else {}

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=15)


def _config(tmp_path: Path, registry: LocalRegistry, text: str) -> tuple[Path, int]:
    port = free_port()
    text = text.replace('listen = "127.0.0.1:8080"', f'listen = "127.0.0.1:{port}"')
    path = tmp_path / "config.toml"
    path.write_text(text + f'\n[registries."docker.io"]\nurl = "{registry.base}"\n')
    return path, port


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    started: list[Run] = []
    yield started
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait()


def test_the_first_command_runs_the_default_config_without_any_secret(
    tmp_path: Path, registry: LocalRegistry, runs: list[Run]
) -> None:
    readme = (REPO / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)\n```", readme, re.S)
    assert first and first.group(1).endswith("&& .venv/bin/reconciler run") and "TOKEN" not in first.group(1)
    stack = push_schema2(registry.base, "xchem/fragalysis-stack", "latest", label="first-run")
    release = push_schema2(registry.base, "xchem/fragalysis-stack", "2026.8.3", label="first-run-release")
    for image in ("fragalysis-frontend", "fragalysis-backend"):
        push_schema2(registry.base, f"xchem/{image}", "latest", label="first-run")
    path, port = _config(tmp_path, registry, (REPO / "config.toml").read_text())
    run = Run(path, port)
    runs.append(run)

    def checked() -> dict[str, dict[str, object]]:
        watches = run.watches()
        return watches if len(watches) == 4 and all(w["checked_at"] for w in watches.values()) else {}

    watches = wait_until("the first pass over the four watches", checked)
    assert {name: w["state"] for name, w in watches.items()} == dict.fromkeys(
        ("stack-staging", "stack-production", "frontend", "backend"), "in_sync"
    )
    assert (tmp_path / "reconciler.db").exists(), "it records, in the SQLite file beside the configuration"
    assert watches["stack-staging"]["observed"]["digest"] == stack  # type: ignore[index]
    assert watches["stack-production"]["observed"]["digest"] == release  # type: ignore[index]
    assert watches["stack-staging"]["cannot_act"] == "AWX_TOKEN is not set (awx.production.token_env)"
    code, body = run.get("/readyz")
    assert code == 200 and "AWX_TOKEN is not set" in body, body
    assert run.stop() == 0
    log = run.log.read_text()
    assert "Traceback" not in log and log.count("AWX_TOKEN") == 1, log
    assert " ERROR " not in log, log


DOOMED = """
[reconciler]
interval = "1h"
jitter = "0s"

[server]
listen = "127.0.0.1:8080"

[[watch]]
name = "one"
image = "first-run/{stem}-one"
tag = "latest"

[[watch]]
name = "two"
image = "first-run/{stem}-two"
tag = "latest"
"""


def test_readyz_is_503_while_every_watch_fails_its_check_and_200_once_one_works(
    tmp_path: Path, registry: LocalRegistry, runs: list[Run]
) -> None:
    stem = tmp_path.name.lower().replace("_", "-")[:40]
    path, port = _config(tmp_path, registry, DOOMED.format(stem=stem))
    run = Run(path, port)
    runs.append(run)
    wait_until("both checks to fail", lambda: [w["state"] for w in run.watches().values()] == ["error", "error"])
    code, body = run.get("/readyz")
    assert code == 503, body
    assert body.startswith("the last check of every watch failed"), body
    assert "not found or private" in body, body

    push_schema2(registry.base, f"first-run/{stem}-one", "latest", label="now-there")
    assert run.get("/reconcile?watch=one", method="POST")[0] == 202  # open on a loopback listener without a token
    wait_until("the check of one to work", lambda: run.watches().get("one", {}).get("state") == "in_sync")
    code, body = run.get("/readyz")
    assert code == 200, body
    assert run.stop() == 0

"""Figures for the daemon: resident memory when idle, and the time from a push to the AWX launch by webhook.

Starts a real `docker-registry`, the fake AWX server of the tests and `reconciler run` as a subprocess (interval 1h,
so only the webhook makes it look), then: waits until the start-up pass is done and the daemon has idled
`--idle` seconds, reads its VmRSS from /proc; pushes a new digest and POSTs the Docker Hub webhook `--pushes` times,
timing each push -> launch. Prints the figures; a measurement, not a test.

    .venv/bin/python bench/daemon_figures.py [--pushes 10] [--idle 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.awx import FakeAwx
from tests.support.registry import LocalRegistry, free_port, push_schema2

CONFIG = """
[reconciler]
database = "sqlite:///{db}"
interval = "1h"
jitter = "0s"
[server]
listen = "127.0.0.1:{port}"
[registries."docker.io"]
url = "{registry}"
[awx.production]
url = "{awx}"
token_env = "BENCH_AWX_TOKEN"
poll = "50ms"
[[watch]]
name = "staging"
image = "bench/stack"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}" }}
"""


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(check, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.005)
    raise SystemExit("timed out")


def status(port: int) -> dict:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as resp:
            return json.loads(resp.read())["watches"][0]
    except OSError:
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--idle", type=float, default=5.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-daemon-bench-"))
    with LocalRegistry(work / "registry") as registry, FakeAwx(token="bench-token") as awx:
        awx.add_template("Staging Fragalysis Stack")
        awx.script(outcome="successful", polls=1)
        port = free_port()
        (work / "config.toml").write_text(
            CONFIG.format(db=work / "r.db", port=port, registry=registry.base, awx=awx.base)
        )
        push_schema2(registry.base, "bench/stack", "latest", label="start")
        env = {**os.environ, "BENCH_AWX_TOKEN": "bench-token", "RECONCILER_WEBHOOK_SECRET": "bench-secret"}
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "reconciler.cli",
                "--config",
                str(work / "config.toml"),
                "--log-level",
                "warning",
                "run",
            ],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: status(port).get("state") == "in_sync")
            time.sleep(args.idle)  # a benchmark, not a test: idling is what is measured
            idle = rss_mib(proc.pid)
            latencies = []
            for i in range(args.pushes):
                push_schema2(registry.base, "bench/stack", "latest", label=f"push-{i}")
                launches = len(awx.launches)
                started = time.monotonic()
                req = urllib.request.Request(
                    f"http://127.0.0.1:{port}/hooks/dockerhub/bench-secret",
                    method="POST",
                    data=json.dumps({"repository": {"repo_name": "bench/stack"}}).encode(),
                )
                urllib.request.urlopen(req, timeout=5).read()
                wait_until(lambda: len(awx.launches) > launches)  # noqa: B023
                latencies.append(time.monotonic() - started)
                wait_until(lambda: status(port).get("state") == "in_sync")
            busy = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
    ms = sorted(x * 1000 for x in latencies)
    print(
        f"idle daemon resident memory (VmRSS) after {args.idle:.0f}s idle: {idle:.1f} MiB "
        f"(after {args.pushes} deployments: {busy:.1f} MiB)"
    )
    print(
        f"webhook -> AWX launch over {len(ms)} pushes: median {statistics.median(ms):.0f} ms, "
        f"min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms"
    )


if __name__ == "__main__":
    main()

"""Figures for the daemon: resident memory when idle (and over a soak), and the time from a push to the AWX launch.

Starts a real `docker-registry`, the fake AWX server of the tests and `reconciler run` as a subprocess (interval 1h,
so only the webhook makes it look), then: waits until the start-up pass has checked every watch (/status) and the
daemon has idled `--idle` seconds, reads its VmRSS from /proc and sets it beside the target (<= 60 MiB with the
default configuration of one AWX watch, <= 90 MiB with 1,000 watches); pushes a new digest and POSTs the Docker Hub
webhook `--pushes` times, timing each push -> launch.

`--watches N` (N > 1) adds N - 1 tag watches without an action, one per distinct tag of `bench/app` (seeded with
`push_many`), so that the daemon watches N images; the idle reading waits for the start-up pass over all of them.

`--soak SECONDS` then goes on for SECONDS: a new digest pushed and the webhook POSTed every `--soak-every` seconds
(each waited for up to its launch and back in sync), VmRSS sampled every 10 s. It prints the samples, the
first/last/max, and the growth over the second half: the median of the last quarter's samples minus that of the
second quarter's, and the least-squares slope over the second half in MiB per 10 minutes. Memory is called flat when
both are under 2 MiB (FLAT_MIB). A soak shorter than the 10 minutes of the target only indicates: its slope
extrapolates a few samples.

The daemon is stopped with SIGTERM (and its time to stop printed); the temp dir (registry data, database) is removed.
Prints the figures; a measurement, not a test: exits 0 (1 only when no figure could be taken: the daemon never got
in sync, "timed out", or exited; its last stderr lines are then printed).

`--interval` sets every watch's interval (default 1h); at the end the script prints what the passes left in the
database: the rows of `runs_hourly` (one per hour) and the passes they count, e.g. with `--watches 202 --interval
5s --idle 150`.

    .venv/bin/python bench/daemon_figures.py [--pushes 10] [--idle 5] [--watches 1] [--soak 600] [--soak-every 3]
        [--interval 1h] [--database URL]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.awx import FakeAwx
from tests.support.registry import LocalRegistry, free_port, push_many, push_schema2

CONFIG = """
[reconciler]
database = "{database}"
interval = "{interval}"
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
DEFAULT_WATCHES = 1  # CONFIG's one watch
EXTRA_REPO = "bench/app"  # the repository whose tags the extra watches watch
TARGET_DEFAULT_MIB = 60.0  # idle VmRSS with the default configuration
TARGET_MANY_MIB, MANY = 90.0, 1000  # idle VmRSS with 1,000 watches
FLAT_MIB = 2.0  # the soak's second half grew less than this (quarter medians, and slope per 10 minutes): flat
SAMPLE_EVERY = 10.0  # seconds between VmRSS samples in the soak


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wait_until(check, timeout: float = 30.0, every: float = 0.005):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(every)
    raise SystemExit("timed out")


def alive(proc: subprocess.Popen[bytes]) -> bool:
    if proc.poll() is not None:
        raise SystemExit(f"the daemon exited with {proc.returncode}")
    return True


def watches(port: int) -> list[dict]:  # type: ignore[type-arg]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=30) as resp:
            return list(json.loads(resp.read())["watches"])
    except OSError:
        return []


def status(port: int) -> dict:  # type: ignore[type-arg]
    """The first watch's status: CONFIG's `staging`, the one the pushes deploy."""
    return next(iter(watches(port)), {})


def all_in_sync(port: int, count: int) -> bool:
    found = watches(port)
    return len(found) == count and all(w.get("state") == "in_sync" for w in found)


def write_config(
    path: Path, *, database: str, port: int, registry: str, awx: str, tags: list[str], interval: str = "1h"
) -> None:
    extra = "".join(f'[[watch]]\nname = "tag-{t}"\nimage = "{EXTRA_REPO}"\ntag = "{t}"\n' for t in tags)
    path.write_text(CONFIG.format(database=database, port=port, registry=registry, awx=awx, interval=interval) + extra)


class Pusher:
    """Pushes a new digest of `bench/stack:latest`, POSTs the webhook, waits for the launch and for `in_sync`."""

    def __init__(self, registry: str, awx: FakeAwx, port: int, poll: float) -> None:
        self.registry, self.awx, self.port, self.poll = registry, awx, port, poll
        self.count = 0

    def deploy(self) -> float:
        """One push -> launch, in seconds."""
        push_schema2(self.registry, "bench/stack", "latest", label=f"push-{self.count}")
        self.count += 1
        launches = len(self.awx.launches)
        started = time.monotonic()
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/hooks/dockerhub/bench-secret",
            method="POST",
            data=json.dumps({"repository": {"repo_name": "bench/stack"}}).encode(),
        )
        urllib.request.urlopen(req, timeout=5).read()
        wait_until(lambda: len(self.awx.launches) > launches)
        latency = time.monotonic() - started
        wait_until(lambda: status(self.port).get("state") == "in_sync", every=self.poll)
        return latency


def soak(pid: int, pusher: Pusher, seconds: float, every: float) -> tuple[list[tuple[float, float]], list[float]]:
    """(seconds since the start, VmRSS MiB) every SAMPLE_EVERY and at the end; the push -> launch latencies."""
    samples: list[tuple[float, float]] = []
    latencies: list[float] = []
    done = threading.Event()
    started = time.monotonic()

    def sample() -> None:
        while True:
            samples.append((time.monotonic() - started, rss_mib(pid)))
            if done.wait(SAMPLE_EVERY - (time.monotonic() - started) % SAMPLE_EVERY):
                return

    sampler = threading.Thread(target=sample, name="sampler", daemon=True)
    sampler.start()
    try:
        while (now := time.monotonic()) < started + seconds:
            next_push = now + every
            latencies.append(pusher.deploy())
            time.sleep(max(0.0, min(next_push, started + seconds) - time.monotonic()))
    finally:
        done.set()
        sampler.join()
    if (end := time.monotonic() - started) - samples[-1][0] > 1.0:
        samples.append((end, rss_mib(pid)))
    return samples, latencies


def growth(samples: list[tuple[float, float]], seconds: float) -> tuple[float, float]:
    """Over the second half: (last-quarter median - second-quarter median, least-squares slope in MiB per 10 min)."""
    q2 = [m for t, m in samples if seconds / 4 <= t < seconds / 2]
    q4 = [m for t, m in samples if t >= seconds * 3 / 4]
    half = [(t, m) for t, m in samples if t >= seconds / 2]
    quarters = statistics.median(q4) - statistics.median(q2) if q2 and q4 else float("nan")
    slope = float("nan")
    if len(half) >= 2:
        slope = statistics.linear_regression([t for t, _ in half], [m for _, m in half]).slope * 600
    return quarters, slope


def against_target(rss: float, count: int) -> str:
    if count <= DEFAULT_WATCHES:
        target, what = TARGET_DEFAULT_MIB, "the default configuration"
    else:
        target, what = TARGET_MANY_MIB, f"{MANY:,} watches" + ("" if count == MANY else f"; this run has {count:,}")
    verdict = "met" if rss <= target else f"MISSED by {rss - target:.1f} MiB"
    return f"target <= {target:.0f} MiB ({what}): {verdict}"


def ms_figures(seconds: list[float]) -> str:
    ms = sorted(x * 1000 for x in seconds)
    return f"median {statistics.median(ms):.0f} ms, min {ms[0]:.0f} ms, max {ms[-1]:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=10)
    parser.add_argument("--idle", type=float, default=5.0)
    parser.add_argument("--watches", type=int, default=DEFAULT_WATCHES, help="watches in all (default: 1, AWX)")
    parser.add_argument("--soak", type=float, default=0.0, help="seconds of pushes while VmRSS is sampled")
    parser.add_argument("--soak-every", type=float, default=3.0, help="seconds between the soak's pushes")
    parser.add_argument("--interval", default="1h", help="every watch's interval (default 1h: only webhooks)")
    parser.add_argument("--database", help="an empty database's URL (default: an SQLite file in the temp dir)")
    args = parser.parse_args()
    count = max(args.watches, DEFAULT_WATCHES)
    # /status answers for every watch: with many, asked 200 times a second it would slow the passes it waits for
    poll = 0.005 if count <= DEFAULT_WATCHES else 0.1
    samples: list[tuple[float, float]] = []
    soaked: list[float] = []
    with tempfile.TemporaryDirectory(prefix="reconciler-daemon-bench-") as tmp:
        work = Path(tmp)
        with LocalRegistry(work / "registry") as registry, FakeAwx(token="bench-token") as awx:
            awx.add_template("Staging Fragalysis Stack")
            awx.script(outcome="successful", polls=1)
            port = free_port()
            tags = [f"t{i:05d}" for i in range(count - DEFAULT_WATCHES)]
            if tags:
                seeded = time.monotonic()
                push_many(registry.base, EXTRA_REPO, tags, label="bench", threads=16)
                print(f"seeded {len(tags)} tags of {EXTRA_REPO} in {time.monotonic() - seeded:.1f} s")
            write_config(
                work / "config.toml",
                database=args.database or f"sqlite:///{work / 'r.db'}",
                port=port,
                registry=registry.base,
                awx=awx.base,
                tags=tags,
                interval=args.interval,
            )
            push_schema2(registry.base, "bench/stack", "latest", label="start")
            env = {**os.environ, "BENCH_AWX_TOKEN": "bench-token", "RECONCILER_WEBHOOK_SECRET": "bench-secret"}
            log_path = work / "daemon.log"
            with open(log_path, "wb") as log:
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
                    stderr=log,
                )
            try:
                started = time.monotonic()
                wait_until(lambda: alive(proc) and all_in_sync(port, count), timeout=30 + 0.2 * count, every=poll * 10)
                startup = time.monotonic() - started
                time.sleep(args.idle)  # a benchmark, not a test: idling is what is measured
                idle = rss_mib(proc.pid)
                pusher = Pusher(registry.base, awx, port, poll)
                latencies = [pusher.deploy() for _ in range(args.pushes)]
                busy = rss_mib(proc.pid)
                if args.soak > 0:
                    samples, soaked = soak(proc.pid, pusher, args.soak, args.soak_every)
            except BaseException:  # the daemon's own words, before the temp dir goes
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                print("\n".join(["daemon stderr, the last lines:", *tail]), file=sys.stderr)
                raise
            finally:
                stopping = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
                stopped = time.monotonic() - stopping
        log_lines = log_path.read_text(errors="replace").splitlines()
        engine = sqlalchemy.create_engine(args.database or f"sqlite:///{work / 'r.db'}")
        with engine.connect() as db:  # what the passes left of themselves
            hours, passes = db.exec_driver_sql("SELECT count(*), coalesce(sum(passes), 0) FROM runs_hourly").one()
            per_pass = db.exec_driver_sql("SELECT count(*) FROM runs").scalar()
        engine.dispose()

    print(f"start-up pass over {count} watch{'es' if count > 1 else ''}: all in sync after {startup:.1f} s")
    print(
        f"idle daemon resident memory (VmRSS) after {args.idle:.0f}s idle: {idle:.1f} MiB "
        f"(after {args.pushes} deployments: {busy:.1f} MiB)"
    )
    print(f"  {against_target(idle, count)}")
    if latencies:
        print(f"webhook -> AWX launch over {len(latencies)} pushes: {ms_figures(latencies)}")
    if samples:
        rss = [m for _, m in samples]
        quarters, slope = growth(samples, args.soak)
        if math.isnan(quarters) or math.isnan(slope):
            verdict = "too short to tell"
        else:
            verdict = "flat" if quarters < FLAT_MIB and slope < FLAT_MIB else "GROWING"
        print(
            f"soak {args.soak:.0f} s, {len(soaked)} deployments (one every {args.soak_every:g} s; "
            f"push -> launch {ms_figures(soaked)})"
        )
        print(
            textwrap.fill(
                " ".join(f"{m:.1f}" for m in rss),
                width=120,
                initial_indent=f"  VmRSS every {SAMPLE_EVERY:.0f} s (MiB): ",
                subsequent_indent="    ",
            )
        )
        print(
            f"  first {rss[0]:.1f} MiB, last {rss[-1]:.1f} MiB, max {max(rss):.1f} MiB\n"
            f"  second half: last-quarter median - second-quarter median {quarters:+.2f} MiB, "
            f"slope {slope:+.2f} MiB/10 min -> {verdict} (flat: both < {FLAT_MIB:.0f} MiB)"
        )
    print(
        f"runs recorded over {stopping - started:.0f} s of the daemon (interval {args.interval}): {passes} passes in "
        f"{hours} runs_hourly rows (and {per_pass} rows of 0.1's per-pass runs)"
    )
    bad = [line for line in log_lines if any(w in line for w in (" WARNING ", " ERROR ", " CRITICAL ", "Traceback"))]
    print(
        f"daemon stopped by SIGTERM in {stopped:.2f} s (exit {code}); its stderr: {len(log_lines)} lines, "
        + (f"{len(bad)} warnings or errors, the last: {bad[-1][:160]}" if bad else "no warning or error")
    )


if __name__ == "__main__":
    main()

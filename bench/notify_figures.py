"""Figures for notifications: how soon `started` reaches a webhook after an AWX launch, and that SIGKILLs lose none.

Runs the real CLI (`reconcile`, a subprocess per run) against a real `docker-registry`, the fake AWX server of the
tests and a signed webhook target pointing at the tests' `Receiver`, each on its own database and receiver:

1. Latency, over `--runs` deployments (push a digest, run `reconcile`; the AWX job takes a few polls, so `started`
   is not held back by the deployment): from the moment the fake AWX answered the launch POST to the arrival of
   `started` at the receiver, beside a floor measured in the same run: a bare signed POST of the same body from
   this process to the same receiver.
2. Loss, over `--kills` rounds (push a digest, spawn `reconcile`, SIGKILL it after a random delay, `--seed`; the
   receiver takes `--answer-delay` to answer, so kills land mid-send), then clean runs until no action is open and
   every claim a killed process left has expired: every notice recorded must have reached the receiver (repeats
   allowed), each watch's first arrivals in the order recorded, AWX one launch per launched action; else exit 1.

    .venv/bin/python bench/notify_figures.py [--runs 20] [--kills 30] [--seed 11] [--answer-delay 0.2]
                                             [--min-delay 0.3] [--max-delay 1.2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import create_engine, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.notify.deliver import HOLD_MARGIN
from reconciler.notify.targets import sign
from reconciler.store import tables
from tests.fakes.awx import FakeAwx
from tests.fakes.awx_base import Reply
from tests.support.receiver import Receiver
from tests.support.registry import LocalRegistry, push_schema2

TOKEN, SECRET = "bench-awx-token", "bench-hook-secret"
HOLD = 1.0 + HOLD_MARGIN.total_seconds()  # how long a send is claimed: the webhook's timeout (1 s) + the margin
CONFIG = """
[reconciler]
database = "sqlite:///{db}"
max_attempts = 3
[registries."docker.io"]
url = "{registry}"
[awx.production]
url = "{awx}"
token_env = "BENCH_AWX_TOKEN"
poll = "{poll}"
timeout = "10m"
[[watch]]
name = "staging"
image = "{repo}"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}", stack_digest = "{{digest}}" }}
[[notify]]
name = "audit"
kind = "webhook"
url_env = "BENCH_HOOK_URL"
secret_env = "BENCH_HOOK_SECRET"
events = ["drift", "started", "succeeded", "failed", "gave_up"]
timeout = "1s"
"""


def quiet_resets(server: Any) -> None:
    """A client SIGKILLed mid-request resets its connection: no traceback for that from the server's thread."""
    noisy = server.handle_error
    server.handle_error = lambda *args: None if isinstance(sys.exc_info()[1], ConnectionError) else noisy(*args)


class TimedAwx(FakeAwx):
    """The fake AWX, noting the wall-clock time each launch was answered (job id -> time.time())."""

    def __init__(self) -> None:
        super().__init__(token=TOKEN)
        self.answered: dict[int, float] = {}

    def start(self) -> TimedAwx:
        super().start()
        quiet_resets(self._http._server)
        return self

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Reply:
        reply = super().handle(method, target, headers, body)
        if method == "POST" and target.endswith("/launch/") and reply.status == 201:
            self.answered[json.loads(reply.body)["job"]] = time.time()
        return reply


class TimedReceiver(Receiver):
    """The tests' receiver, noting when each request arrived (body read); it answers `answer_delay` s later."""

    def __init__(self, answer_delay: float = 0.0) -> None:
        self.arrived: dict[int, float] = {}  # id(Received) -> time.time(); every Received stays in `received`
        self.answer_delay = answer_delay
        super().__init__()

    def _arrived(self, got: Any) -> int | None:
        self.arrived[id(got)] = time.time()
        status = super()._arrived(got)
        time.sleep(self.answer_delay)
        return status


class Deployment:
    """One watch deployed by AWX, its own config, database and receiver; `reconcile` runs as a real process."""

    def __init__(self, work: Path, registry: LocalRegistry, awx: FakeAwx, hook: Receiver, *, poll: str) -> None:
        self.registry = registry
        self.repo, self.database = f"bench/{work.name}", f"sqlite:///{work / 'r.db'}"
        work.mkdir()
        self.config = work / "config.toml"
        self.config.write_text(
            CONFIG.format(db=work / "r.db", registry=registry.base, awx=awx.base, repo=self.repo, poll=poll)
        )
        self.env = {**os.environ, "BENCH_AWX_TOKEN": TOKEN, "BENCH_HOOK_SECRET": SECRET}
        self.env["BENCH_HOOK_URL"] = f"{hook.url}/hook"
        self.engine = create_engine(self.database)

    def push(self, label: str) -> None:
        push_schema2(self.registry.base, self.repo, "latest", label=label)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "reconciler.cli", "--config", str(self.config), "reconcile"]

    def reconcile(self) -> None:
        done = subprocess.run(self.command(), check=False, env=self.env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise SystemExit(f"reconcile exited {done.returncode}:\n{done.stdout}{done.stderr}")

    def spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(), env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def rows(self, table: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(table).order_by(next(iter(table.primary_key.columns)))))

    def open_actions(self) -> int:
        return sum(r.status in tables.OPEN_STATUSES for r in self.rows(tables.actions))


def ms(values: list[float]) -> str:
    xs = sorted(v * 1000 for v in values)
    p90 = xs[min(len(xs) - 1, round(0.9 * (len(xs) - 1)))]
    return f"median {statistics.median(xs):6.1f} ms, p90 {p90:6.1f} ms, max {xs[-1]:6.1f} ms"


def latency(work: Path, registry: LocalRegistry, runs: int) -> None:
    with TimedAwx() as awx, TimedReceiver() as hook:
        awx.add_template("Staging Fragalysis Stack")
        awx.script(outcome="successful", polls=4)  # polls 0.1 s apart, 1.5 x longer each: the job lasts ~0.8 s
        d = Deployment(work / "latency", registry, awx, hook, poll="100ms")
        d.push("baseline")
        d.reconcile()
        delays, before_end = [], 0
        for i in range(runs):
            d.push(f"run-{i}")
            d.reconcile()
            action = d.rows(tables.actions)[-1]
            told = [r for r in hook.received if r.headers["X-Reconciler-Event"] == "started"]
            arrived = hook.arrived[id(next(r for r in told if r.json()["action"]["id"] == action.id))]
            answered = awx.answered[int(action.external_ref)]
            delays.append(arrived - answered)
            before_end += arrived < action.finished_at.timestamp()
        body = told[-1].body
        floor, commits = [], []  # and a commit to SQLite on the same disk: the launch's and the claim's precede a send
        with requests.Session() as session, sqlite3.connect(work / "commit.db") as db:
            db.execute("CREATE TABLE t (x)")
            for i in range(runs):
                headers = {"Content-Type": "application/json", "X-Reconciler-Signature-256": sign(SECRET, body)}
                sent = time.time()
                session.post(f"{hook.url}/floor", data=body, headers=headers, timeout=5).raise_for_status()
                floor.append(hook.arrived[id(hook.received[-1])] - sent)
                begun = time.time()
                db.execute("INSERT INTO t VALUES (?)", (i,)).connection.commit()
                commits.append(time.time() - begun)
    print(f"launch answered by AWX -> `started` at the webhook, {runs} deployments: {ms(delays)}")
    print(f"  floor, a bare signed POST of the same body to the same receiver:   {ms(floor)}")
    print(f"  for scale, one SQLite commit (fsync) on the same disk, {runs} times:    {ms(commits)}")
    print(f"  `started` arrived before the deployment ended in {before_end}/{runs}")


def wait_claims_expired(d: Deployment, timeout: float = 30.0) -> None:
    """Until no pending row is claimed (by a killed process) or backing off; polls the database."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = [r for r in d.rows(tables.notifications) if r.status == "pending"]
        due = max((t.timestamp() for r in pending for t in (r.claimed_until, r.next_attempt_at) if t), default=0.0)
        if due < time.time():
            return
        time.sleep(min(0.2, due - time.time() + 0.01))
    raise SystemExit("pending notifications stayed claimed")


def kills(
    work: Path, registry: LocalRegistry, rounds: int, seed: int, delays: tuple[float, float], answer_delay: float
) -> bool:
    rng = random.Random(seed)
    with TimedAwx() as awx, TimedReceiver(answer_delay) as hook:
        awx.add_template("Staging Fragalysis Stack")
        awx.script(outcome="successful", polls=3)
        d = Deployment(work / "kills", registry, awx, hook, poll="100ms")
        d.push("baseline")
        d.reconcile()
        killed = mid_send = unsent = open_ = 0
        for i in range(rounds):
            d.push(f"kill-{i}")
            spawned = time.time()
            proc = d.spawn()
            time.sleep(rng.uniform(*delays))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed += 1
            proc.wait()  # reaped: the next run sees its lease holder gone
            pending = [r for r in d.rows(tables.notifications) if r.status == "pending"]
            mid_send += any(r.claimed_until and r.claimed_until.timestamp() >= spawned + HOLD for r in pending)
            unsent += bool(pending)
            open_ += d.open_actions() > 0
        hook.answer_delay = 0.0  # the backlog goes out fast: a run drains for at most the timeout (1 s)
        clean = final = 0
        while d.open_actions() and clean < 10:
            d.reconcile()
            clean += 1
        while any(r.status == "pending" for r in d.rows(tables.notifications)) and final < 10:
            wait_claims_expired(d)  # a killed process's claims expire (the timeout + 5 s); then a run sends them
            d.reconcile()
            final += 1
        notices = [r for r in d.rows(tables.notifications) if r.target == "audit"]
        actions = d.rows(tables.actions)
        got = [r.headers["X-Reconciler-Delivery"] for r in hook.received]
        launches, jobs = len(awx.launches), set(awx.jobs)
    first = {ident: position for position, ident in reversed(list(enumerate(got)))}  # each id's first arrival
    lost = [r for r in notices if r.id not in first]
    undelivered = [r for r in notices if r.status != "delivered"]
    violations = []
    for watch in sorted({r.watch or "" for r in notices}):
        arrived = [r for r in notices if (r.watch or "") == watch and r.id in first]
        violations += [(a, b) for a, b in itertools.pairwise(arrived) if first[a.id] > first[b.id]]
    launched = [a for a in actions if a.launched_at is not None]
    refs = {int(a.external_ref) for a in launched}
    print(
        f"SIGKILL: {rounds} rounds (seed {seed}, kill after {delays[0]:g}-{delays[1]:g} s, receiver answering in "
        f"{answer_delay:g} s): {killed} killed, {rounds - killed} finished first"
    )
    print(
        f"  rounds that left: notices pending {unsent}, one it had claimed {mid_send}, an action open {open_}; then "
        f"{clean} clean run(s) until no action was open, {final} after the claims expired"
    )
    print(
        f"  notices recorded {len(notices)}, delivered {len(notices) - len(undelivered)}, lost {len(lost)}, "
        f"duplicates {len(got) - len(first)} (allowed), order violations {len(violations)}"
    )
    print(
        f"  AWX launches {launches} for {len(launched)} actions that reached launched ({len(actions)} actions); "
        f"AWX jobs no action records: {len(jobs - refs)}"
    )
    for r in {r.seq: r for r in [*lost, *undelivered]}.values():
        print(
            f"  NOT DELIVERED: seq {r.seq} {r.event} id {r.id} status {r.status} attempts {r.attempts} "
            f"claimed_until {r.claimed_until} arrived {r.id in first} error {r.last_error}"
        )
    for a, b in violations:
        print(f"  OUT OF ORDER: seq {a.seq} ({a.event}, {a.id}) first arrived after seq {b.seq} ({b.event}, {b.id})")
    return not lost and not undelivered and not violations and launches == len(launched) and jobs <= refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="deployments timed (default 20)")
    parser.add_argument("--kills", type=int, default=30, help="reconcile runs SIGKILLed (default 30)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the kill delays (default 11)")
    parser.add_argument("--min-delay", type=float, default=0.3, help="shortest kill delay, seconds (default 0.3)")
    parser.add_argument("--max-delay", type=float, default=1.2, help="longest kill delay, seconds (default 1.2)")
    parser.add_argument("--answer-delay", type=float, default=0.2, help="receiver's answer time in kill rounds (0.2)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="reconciler-notify-bench-"))
    with LocalRegistry(work / "registry") as registry:
        latency(work, registry, args.runs)
        ok = kills(work, registry, args.kills, args.seed, (args.min_delay, args.max_delay), args.answer_delay)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

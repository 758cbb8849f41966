"""Benchmark: `reconciler status`, `history` and `--version` as whole processes over 10,000 watches and 1,000,000
history rows, on SQLite and on PostgreSQL, each beside a bare `sqlite3`/`psql` process reading the same rows.

Writes a config.toml with --watches watches (w1..wN over a few images and tags; `--action awx` gives each an AWX
action) in a temp dir and creates the schema with the real `reconciler db upgrade`: an SQLite file in the temp dir,
and on PostgreSQL a fresh database `status_scale` on the server of --postgres (dropped at the end). Fills it with raw
SQL (sqlite3 executemany in one transaction; psycopg COPY), not through the product: a watch_state row per watch,
--rows observations spread evenly over the watches, --actions succeeded AWX actions per watch; then ANALYZE (VACUUM
ANALYZE on PostgreSQL, so that autovacuum does not start during the timings). Times each command as a subprocess
(wall clock; a checked warm-up, then --runs interleaved rounds) and prints median/min/max beside its target and its
floor in the same run: the interpreter's start (`python -c pass`), the CLI's import, the database's driver imported
and connected (what `status` and `history` read through; beside it, SQLAlchemy's), the bare query of the same rows,
and (beside `status --json`) those rows printed as JSON by a Python one-liner with no logic at all;
and the warm-up's time ("cold": the product's parsed copy of config.toml, kept in $XDG_CACHE_HOME, which points into
the temp dir, is removed before it). Bytecode is kept (PYTHONPYCACHEPREFIX in the temp dir, PYTHONDONTWRITEBYTECODE
unset), as an installed wheel has its .pyc, unless --no-pyc. A measurement: always exits 0.

    .venv/bin/python bench/status_scale.py [--watches 10000] [--rows 1000000] [--actions 2] [--runs 5]
        [--postgres URL] [--only sqlite|postgresql] [--action none|awx] [--keep] [--no-pyc]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

BIN = Path(sys.executable).parent
RECONCILER = str(BIN / "reconciler") if (BIN / "reconciler").exists() else shutil.which("reconciler") or "reconciler"
PG_DEFAULT = os.environ.get("RECONCILER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
PG_DATABASE = "status_scale"
IMAGES = 8
SELECTORS = ("latest", "stable", "main", "release")  # "release": a `tags = "release"` watch
SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DateTime on SQLite: naive UTC text
Row = tuple[Any, ...]
Ts = Callable[[datetime], Any]

# The columns filled; the others keep their defaults (check tables.py for a new NOT NULL column without one).
STATE = "watch image selector observed_tag observed_digest observed_since checked_at deployed_tag deployed_digest"
STATE += " deployed_at"
OBSERVATION = "watch at tag digest verdict reason"
ACTION = "watch kind status tag digest previous_tag previous_digest external_ref link"
ACTION += " created_at launched_at finished_at"


_CONNECT = "import sqlalchemy, sys; sqlalchemy.create_engine(sys.argv[1]).connect().close()"
_DRIVER = (
    "import sys; a = sys.argv[1]; db = __import__('psycopg' if a.startswith('postgresql') else 'sqlite3');"
    " db.connect(a).close()"
)

# The same rows as `sqlite3: status`, printed as JSON by Python with no logic at all (a row, a dict of its columns):
# what any Python program pays for the rows and the encoding, without a configuration or a model.
# (On PostgreSQL in a UTC session, as the product reads: psycopg then converts no time to the server's zone.)
_ROWS_JSON = (
    "import json, sys; a = sys.argv[1]; pg = a.startswith('postgresql'); db = __import__('psycopg' if pg else"
    " 'sqlite3'); c = db.connect(a).cursor(); pg and c.execute(\"SET TIME ZONE 'UTC'\"); c.execute(sys.argv[2]);"
    " names = [d[0] for d in c.description];"
    " sys.stdout.write(json.dumps([dict(zip(names, r)) for r in c.fetchall()], default=str))"
)


def write_config(path: Path, watches: int, action: str) -> None:
    database = f"sqlite:///{path.parent / 'reconciler.db'}"
    lines = ["[reconciler]", f"database = {json.dumps(database)}", ""]
    if action == "awx":
        lines += ["[awx.bench]", 'url = "https://awx.example.org"', 'token_env = "BENCH_AWX_TOKEN"', ""]
    for i in range(1, watches + 1):
        selector = SELECTORS[i % len(SELECTORS)]
        lines += ["[[watch]]", f'name = "w{i}"', f'image = "bench/app{i % IMAGES}"']
        lines.append('tags = "release"' if selector == "release" else f'tag = "{selector}"')
        if action == "awx":
            lines += ["[watch.action]", 'kind = "awx"', 'awx = "bench"', 'template = "Bench"']
            lines.append('extra_vars = { image_tag = "{tag}" }')
        lines.append("")
    path.write_text("\n".join(lines))


class Data:
    """The rows. Each watch is in sync: its last observation is observed and deployed (by its last action)."""

    def __init__(self, watches: int, rows: int, actions: int) -> None:
        self.n, self.per = watches, max(1, rows // watches)
        self.actions = min(actions, self.per)
        self.now = datetime.now(UTC).replace(microsecond=0)
        self.t0 = self.now - timedelta(seconds=self.n * self.per + 3600)

    def seen(self, i: int, k: int) -> tuple[str, str, datetime]:
        """Watch i's k-th observation (tag, digest, time): row j = k * watches + i - 1, at t0 + j seconds."""
        j, selector = k * self.n + i - 1, SELECTORS[i % len(SELECTORS)]
        tag = f"1.{k // 100}.{k % 100}" if selector == "release" else selector
        return tag, f"sha256:{j:064x}", self.t0 + timedelta(seconds=j, microseconds=123)

    def states(self, ts: Ts) -> Iterator[Row]:
        for i in range(1, self.n + 1):
            sel = SELECTORS[i % len(SELECTORS)]
            tag, digest, at = self.seen(i, self.per - 1)
            deployed = ts(at + timedelta(seconds=30 if self.actions else 0))  # the last action's finished_at
            head = (f"w{i}", f"docker.io/bench/app{i % IMAGES}", "tags:release" if sel == "release" else f"tag:{sel}")
            yield *head, tag, digest, ts(at), ts(self.now), tag, digest, deployed

    def observations(self, ts: Ts) -> Iterator[Row]:
        for k in range(self.per):
            verdict, reason = ("baseline", "first sighting, taken as deployed") if k == 0 else ("drift", "new digest")
            for i in range(1, self.n + 1):
                tag, digest, at = self.seen(i, k)
                yield f"w{i}", ts(at), tag, digest, verdict, reason

    def action_rows(self, ts: Ts) -> Iterator[Row]:
        for k in range(self.per - self.actions, self.per):
            for i in range(1, self.n + 1):
                (tag, digest, at), job = self.seen(i, k), k * self.n + i
                previous = self.seen(i, k - 1)[:2] if k else (None, None)
                times = [ts(at + timedelta(seconds=s)) for s in (0, 1, 30)]  # created, launched, finished
                row = (f"w{i}", "awx", "succeeded", tag, digest, *previous, str(job))
                yield *row, f"https://awx.example.org/#/jobs/playbook/{job}", *times

    def tables(self, ts: Ts) -> list[tuple[str, str, Iterator[Row]]]:
        return [
            ("watch_state", STATE, self.states(ts)),
            ("observations", OBSERVATION, self.observations(ts)),
            ("actions", ACTION, self.action_rows(ts)),
        ]


def load_sqlite(path: Path, data: Data) -> None:
    con = sqlite3.connect(path)
    with con:
        for table, columns, rows in data.tables(lambda d: d.strftime(SQLITE_TIME)):
            marks = ", ".join("?" * len(columns.split()))
            con.executemany(f"INSERT INTO {table} ({columns.replace(' ', ', ')}) VALUES ({marks})", rows)
    con.execute("ANALYZE")
    con.close()


def load_postgres(url: str, data: Data) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        with con.transaction(), con.cursor() as cur:
            for table, columns, rows in data.tables(lambda d: d):
                with cur.copy(f"COPY {table} ({columns.replace(' ', ', ')}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
        con.execute("VACUUM ANALYZE")


def bare_queries(watch: str) -> dict[str, list[str]]:
    newest = "SELECT s.*, a.* FROM watch_state s LEFT JOIN actions a"
    newest += " ON a.id = (SELECT max(b.id) FROM actions b WHERE b.watch = s.watch)"
    history = [
        "SELECT * FROM observations{} ORDER BY at DESC, id DESC LIMIT 50",
        "SELECT * FROM actions{} ORDER BY id DESC LIMIT 50",
    ]
    one = f" WHERE watch = '{watch}'"
    return {
        "status": [newest + " ORDER BY s.watch"],
        "status --watch": [newest + f" WHERE s.watch = '{watch}'"],
        "history --watch": [q.format(one) for q in history],
        "history": [q.format("") for q in history],
    }


def run(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    return (time.perf_counter() - t0) * 1000, done


def check(label: str, out: str, watches: int, watch: str) -> str | None:
    """None when the output is plausible, else what is wrong with it."""
    if "--json" in label:
        try:
            doc = json.loads(out)
        except ValueError as exc:
            return f"not JSON: {exc}"
        want = watches if "--watch" not in label else 1
        if len(doc["watches"]) != want:
            return f"{len(doc['watches'])} watches, expected {want}"
        states = Counter(w["state"] for w in doc["watches"])
        print(f"  {label}: states {dict(states)}, last_action of the first: {bool(doc['watches'][0]['last_action'])}")
        return None
    expect = "reconciler" if label.endswith("--version") else "w" if label.endswith("history") else watch
    return None if expect in out else f"{expect!r} not in its output"


def bench(kind: str, work: Path, args: argparse.Namespace, env: dict[str, str], psql_url: str | None) -> None:
    data = Data(args.watches, args.rows, args.actions)
    watch = f"w{max(1, args.watches // 2)}"
    config = work / "config.toml"
    cli = [RECONCILER, "--config", str(config)]
    t0 = time.perf_counter()
    _, done = run([*cli, "db", "upgrade"], env, work)
    if done.returncode != 0:
        print(f"\n{kind}: `reconciler db upgrade` exited {done.returncode}: {done.stderr.strip()}; skipped")
        return
    upgrade_s, t0 = time.perf_counter() - t0, time.perf_counter()
    try:
        load_postgres(psql_url, data) if psql_url else load_sqlite(work / "reconciler.db", data)
    except (sqlite3.Error, psycopg.Error) as exc:
        print(f"\n{kind}: loading failed (has the schema a new NOT NULL column?): {exc}; skipped")
        return
    print(
        f"\n{kind}: db upgrade {upgrade_s:.2f} s; loaded {data.n} watch_state rows, {data.n * data.per} observations, "
        f"{data.n * data.actions} actions in {time.perf_counter() - t0:.1f} s"
    )
    bare = [psql_url, "-X", "-q", "-A"] if psql_url else [str(work / "reconciler.db")]
    tool = "psql" if psql_url else "sqlite3"
    driver_url = psql_url or str(work / "reconciler.db")
    floors: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "import reconciler.cli": [sys.executable, "-c", "import reconciler.cli"],
        # What `status` and `history` pay before their first query: the database's own driver, and a connection.
        "import driver, connect": [sys.executable, "-c", _DRIVER, driver_url],
        # What a command reading through SQLAlchemy would pay instead (the other commands do).
        "import sqlalchemy, connect": [
            sys.executable,
            "-c",
            _CONNECT,
            env.get("RECONCILER_DATABASE_URL") or f"sqlite:///{work / 'reconciler.db'}",
        ],
    }
    status_rows = bare_queries(watch)["status"][0]
    floors["python: status rows to JSON"] = [sys.executable, "-c", _ROWS_JSON, driver_url, status_rows]
    for name, statements in bare_queries(watch).items():
        argv = [*bare, *(a for s in statements for a in ("-c", s))] if psql_url else [*bare, "; ".join(statements)]
        floors[f"{tool}: {name}"] = [tool, *argv]
    commands: list[tuple[str, int | None, str]] = [  # (arguments, target ms, floor)
        ("--version", 200, "python -c pass"),
        ("status --json", 300, "python: status rows to JSON"),
        ("status", None, f"{tool}: status"),
        (f"status --watch {watch}", 200, f"{tool}: status --watch"),
        (f"status --watch {watch} --json", 200, f"{tool}: status --watch"),
        (f"history --watch {watch}", 200, f"{tool}: history --watch"),
        ("history", None, f"{tool}: history"),
    ]
    argvs = floors | {f"reconciler {a}": [*cli, *a.split()] for a, _, _ in commands}
    samples: dict[str, list[float]] = {}
    cold: dict[str, float] = {}
    for label, argv in argvs.items():  # one run to write the bytecode, then the warm-up: checked, timed as "cold"
        run(argv, env, work)
        shutil.rmtree(work / "cache", ignore_errors=True)  # the product's parsed copy of config.toml
        cold[label], done = run(argv, env, work)
        problem = f"exit {done.returncode}: {done.stderr.strip()[-300:]}" if done.returncode else None
        if problem is None and label.startswith("reconciler"):
            problem = check(label, done.stdout, args.watches, watch)
        elif problem is None and (tool in label or label.startswith("python:")) and not done.stdout.strip():
            problem = "no rows"
        if problem:
            print(f"  FAILED {label}: {problem}")
        else:
            samples[label] = []
    failed: Counter[str] = Counter()  # timed runs that exited non-zero (the figure then is not the command's)
    for _ in range(args.runs):  # interleaved, so that drift of the machine hits every command alike
        for label, times in samples.items():
            elapsed, done = run(argvs[label], env, work)
            times.append(elapsed)
            failed[label] += done.returncode != 0

    def ms(label: str) -> str:
        return f"{statistics.median(samples[label]):8.0f}" if label in samples else "  failed"

    print(f"({args.runs} runs each; load average now {os.getloadavg()[0]:.2f}, on {os.cpu_count()} CPUs)")
    print(
        f"{'command':48}{'median':>8}{'min':>8}{'max':>8}{'cold':>8}{'target':>8}  meets  floor (median ms, same run)"
    )
    for arguments, target, floor in commands:
        label = f"reconciler {arguments}"
        if label not in samples:
            print(f"{label:48}  failed")
            continue
        median, s = statistics.median(samples[label]), samples[label]
        meets = "-" if target is None else "yes" if median <= target else "NO"
        figures = f"{median:8.0f}{min(s):8.0f}{max(s):8.0f}{cold[label]:8.0f}{target or '-':>8}"
        print(f"{label:48}{figures}  {meets:5}  {ms(floor)}  {floor}")
    for label in floors:
        print(f"{'  floor: ' + label:48}{ms(label)}")
    for label, n in failed.items():
        if n:
            print(f"  WARNING: {n} of the {args.runs} timed runs of {label} exited non-zero: its figures are not valid")
    print("  (cold: the warm-up, with no parsed copy of config.toml kept by the product in $XDG_CACHE_HOME)")


def postgres(url: str) -> tuple[str, str, Callable[[], None]] | str:
    """(the product's URL, psql's URL, drop) for a fresh database on the server of `url`, or why not."""
    product = make_url(url).set(database=PG_DATABASE)
    libpq = product.set(drivername="postgresql").render_as_string(hide_password=False)
    admin = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def drop(create: bool = False) -> None:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as con:
            con.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            if create:
                con.execute(f"CREATE DATABASE {PG_DATABASE}")

    try:
        drop(create=True)
    except psycopg.Error as exc:
        return str(exc).strip()
    return product.render_as_string(hide_password=False), libpq, drop


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--watches", type=int, default=10_000)
    parser.add_argument("--rows", type=int, default=1_000_000, help="observations, spread evenly over the watches")
    parser.add_argument("--actions", type=int, default=2, help="succeeded actions per watch")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command, after one warm-up")
    parser.add_argument("--postgres", default=PG_DEFAULT, help="a server to create the database `status_scale` on")
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--action", choices=("none", "awx"), default="none", help="each watch's action in config.toml")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (and the PostgreSQL database)")
    parser.add_argument("--no-pyc", action="store_true", help="leave PYTHONDONTWRITEBYTECODE as it is (if set)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="status-scale-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    env |= {"BENCH_AWX_TOKEN": "bench", "XDG_CACHE_HOME": str(work / "cache")}  # the parsed config.toml: kept here
    if not args.no_pyc:  # as installed from a wheel, whose .pyc pip writes: keep the bytecode, in the temp dir
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    print(f"machine: nproc={os.cpu_count()}, load {os.getloadavg()[0]:.2f}; {RECONCILER}; temp dir {work}")
    print(f"bytecode: {'as the environment says' if args.no_pyc else 'kept in the temp dir (PYTHONPYCACHEPREFIX)'}")
    t0 = time.perf_counter()
    write_config(work / "config.toml", args.watches, args.action)
    print(f"config.toml: {args.watches} watches, action {args.action}, written in {time.perf_counter() - t0:.2f} s")
    try:
        if args.only != "postgresql":
            bench("sqlite", work, args, env, None)
        if args.only != "sqlite":
            found = postgres(args.postgres)
            if isinstance(found, str):
                print(f"\npostgresql: skipped, {make_url(args.postgres)!r} is unreachable or refused: {found}")
            else:
                product, libpq, drop = found
                try:
                    bench("postgresql", work, args, env | {"RECONCILER_DATABASE_URL": product}, libpq)
                finally:
                    if not args.keep:
                        drop()
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())

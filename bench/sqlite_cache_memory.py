"""Benchmark: how much one SQLite connection of the store grows the process as its database file grows.

Records `--passes` passes of one watch through the product's `queries.Store` (each a new digest, so every pass adds
an observation and the file grows), on the engine `reconciler/database.py` builds (its page cache:
`SQLITE_CACHE_KIB`) and, beside it in the same run, on the same engine with SQLite's default cache (2,000 KiB) —
each in a child process of its own with a new file in a temp dir. Prints the growth of the anonymous resident memory
(RssAnon, /proc) after each fifth of the passes: the page cache filling shows as growth that stops, a leak as growth
that does not. The daemon keeps a few such connections for its life (its pool). A measurement: always exits 0.

    .venv/bin/python bench/sqlite_cache_memory.py [--passes 20000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import database, decide, model
from reconciler.store import queries, schema

WATCH = model.Watch(name="app", image=model.ImageRef.parse("example/app"), selector=model.TagSelector("latest"))
T0 = datetime(2026, 8, 3, tzinfo=UTC)
WARM_UP = 200  # passes before the first reading: the engine, its pool and the schema are in memory by then


def rss_anon_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def one_pass(store: queries.Store, i: int, previous: model.WatchState | None) -> model.WatchState:
    now = T0 + timedelta(seconds=i)
    seen = model.Observation(tag="latest", digest=f"sha256:{i:064x}", checked_at=now)
    decision = decide.decide(watch=WATCH, result=seen, state=previous, now=now)
    state = decide.advance(state=previous, result=seen, decision=decision, watch=WATCH.name, now=now)
    outcome = model.WatchOutcome(
        watch=WATCH, result=seen, decision=decision, state=state, changed=decide.changed(previous, state)
    )
    store.record_pass(model.RunReport(started_at=now, finished_at=now, dry_run=False, outcomes=(outcome,)))
    return state


def child(path: Path, passes: int, default_cache: bool) -> None:
    engine = database.database_engine(f"sqlite:///{path}")
    if default_cache:
        from sqlalchemy import event  # noqa: PLC0415

        event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA cache_size = -2000"))
    schema.upgrade(engine)
    store = queries.Store(engine)
    state = None
    for i in range(WARM_UP):
        state = one_pass(store, i, state)
    base, growth = rss_anon_mib(), []
    for i in range(passes):
        state = one_pass(store, WARM_UP + i, state)
        if (i + 1) % max(passes // 5, 1) == 0:
            growth.append(rss_anon_mib() - base)
    size = path.stat().st_size / 2**20
    print(" ".join(f"{g:+.2f}" for g in growth), f"(file {size:.1f} MiB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passes", type=int, default=20_000)
    parser.add_argument("--child", choices=("product", "default"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.file), args.passes, default_cache=args.child == "default")
        return
    print(f"RssAnon growth (MiB) after each fifth of {args.passes} passes, one connection:")
    with tempfile.TemporaryDirectory(prefix="sqlite-cache-") as tmp:
        for kind, label in (("product", f"{database.SQLITE_CACHE_KIB} KiB"), ("default", "SQLite's 2,000 KiB")):
            done = subprocess.run(
                [sys.executable, __file__, "--child", kind, "--file", f"{tmp}/{kind}.db", "--passes", str(args.passes)],
                capture_output=True,
                text=True,
                check=False,  # a failed child is printed as such
            )
            figures = done.stdout.strip() or f"failed: {done.stderr.strip().splitlines()[-1:]}"
            print(f"  page cache {label:20} {figures}")


if __name__ == "__main__":
    main()

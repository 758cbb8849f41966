"""Benchmark: one reconcile pass over N tag watches against a real `docker-registry`, next to two HTTP floors.

Starts `docker-registry` (tests/support/registry.py) in a temp dir, seeds N distinct tags in `bench/app` plus
release repositories, writes a config.toml with one tag watch per tag and the release watches, then times
`App.reconcile([], dry_run=False)` (database writes included) and `dry_run=True` (no writes), and the same N
manifest HEADs sent (a) one by one through one bare `requests.Session`, (b) by a bare ThreadPoolExecutor(16)
with a session per thread; and `reconciler reconcile --json` as a whole process (start, imports, configuration
and pass). Also checks the registry requests per pass. A measurement: always exits 0.

    .venv/bin/python bench/reconcile_pass.py [--tags 1000] [--releases 5] [--rounds 3] [--database URL]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler import app, clients, config, model  # noqa: E402
from reconciler.registry.client import ACCEPT  # noqa: E402
from reconciler.store import queries, schema  # noqa: E402
from tests.support.registry import LocalRegistry, push_many  # noqa: E402

REPO = "bench/app"
RELEASE_TAGS = [f"1.{minor}.{patch}" for minor in range(4) for patch in range(5)]  # 20 version tags
THREADS = 16
RATIO_CONCURRENT = 1.25  # target: pass / concurrent floor <= this
RATIO_SEQUENTIAL = 1.0  # target: pass / sequential floor < this


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def write_config(path: Path, *, registry: str, database: str, tags: Sequence[str], releases: int) -> None:
    lines = [
        "[reconciler]",
        f"database = {json.dumps(database)}",
        "",
        '[registries."docker.io"]',
        f"url = {json.dumps(registry)}",
        "",
    ]
    for tag in tags:
        lines += ["[[watch]]", f'name = "tag-{tag}"', f'image = "{REPO}"', f'tag = "{tag}"', ""]
    for i in range(releases):
        lines += ["[[watch]]", f'name = "release-{i}"', f'image = "bench/rel{i}"', 'tags = "release"', ""]
    path.write_text("\n".join(lines))


def sequential_floor(urls: Sequence[str]) -> Callable[[], None]:
    session = requests.Session()

    def run() -> None:
        for url in urls:
            session.head(url, headers={"Accept": ACCEPT}, timeout=30).raise_for_status()

    return run


def concurrent_floor(urls: Sequence[str], pool: ThreadPoolExecutor) -> Callable[[], None]:
    local = threading.local()

    def head(url: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        local.session.head(url, headers={"Accept": ACCEPT}, timeout=30).raise_for_status()

    def run() -> None:
        list(pool.map(head, urls))

    return run


def whole_process(config_path: Path, work: Path) -> Callable[[], None]:
    """`reconciler reconcile` as a person runs it: a new process, its start, imports and configuration included."""
    env = {**os.environ, "XDG_CACHE_HOME": str(work / "cache"), "PYTHONPYCACHEPREFIX": str(work / "pycache")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode: keep this checkout's here
    command = [sys.executable, "-m", "reconciler.cli", "--config", str(config_path), "reconcile", "--json"]

    def run() -> None:
        subprocess.run(command, stdout=subprocess.DEVNULL, env=env, check=True, timeout=600)

    return run


def postgres_schema(url: str) -> tuple[str, Callable[[], None]]:
    """A fresh schema on the server of `url`: the URL that selects it, and a function that drops it."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()

    selected = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
    return selected.render_as_string(hide_password=False), drop


def fmt(samples: Sequence[float]) -> str:
    return f"median {statistics.median(samples):7.3f} s   min {min(samples):7.3f} s"


def verdicts(report: model.RunReport) -> str:
    counts = Counter(o.decision.verdict.value for o in report.outcomes)
    return ", ".join(f"{k}={v}" for k, v in sorted(counts.items()))


def bench(args: argparse.Namespace, work: Path) -> None:
    tags = [f"t{i:05d}" for i in range(args.tags)]
    registry = LocalRegistry(work / "registry")
    drop: Callable[[], None] | None = None
    with registry:
        t0 = time.perf_counter()
        push_many(registry.base, REPO, tags, label="bench", threads=THREADS)
        for i in range(args.releases):
            push_many(registry.base, f"bench/rel{i}", RELEASE_TAGS, label=f"rel{i}", threads=THREADS)
        print(
            f"seeded {args.tags} tags + {args.releases}x{len(RELEASE_TAGS)} release tags "
            f"in {time.perf_counter() - t0:.1f} s ({registry.base})"
        )

        database = args.database or f"sqlite:///{work / 'reconciler.db'}"
        if make_url(database).get_backend_name() == "postgresql":
            database, drop = postgres_schema(database)
        config_path = work / "config.toml"
        write_config(config_path, registry=registry.base, database=database, tags=tags, releases=args.releases)
        t0 = time.perf_counter()
        settings = config.load(config_path, env={})
        load_s = time.perf_counter() - t0
        application = app.App(settings, registry=clients.registry_client(settings))
        client = application.registry
        assert client is not None
        try:
            application.upgrade()
            baseline_s, _ = timed(lambda: print(f"baseline pass: {verdicts(application.reconcile([], dry_run=False))}"))

            urls = [f"{registry.base}/v2/{REPO}/manifests/{t}" for t in tags]
            seq = sequential_floor(urls)
            pool = ThreadPoolExecutor(THREADS)
            conc = concurrent_floor(urls, pool)
            seq(), conc(), application.reconcile([], dry_run=True)  # warm-ups
            process = whole_process(config_path, work)
            process()  # warm-up: the parsed configuration kept, the bytecode written
            runs: dict[str, list[tuple[float, float]]] = {k: [] for k in ("pass", "dry", "seq", "conc", "process")}
            per_pass: Counter[tuple[str, str, int]] = Counter()
            last: list[model.RunReport] = []
            for _ in range(args.rounds):  # interleaved so that drift of the machine hits every series alike
                runs["seq"].append(timed(seq))
                runs["conc"].append(timed(conc))
                before = Counter(client.requests)
                runs["pass"].append(timed(lambda: last.append(application.reconcile([], dry_run=False))))
                per_pass = Counter(client.requests)
                per_pass.subtract(before)
                runs["dry"].append(timed(lambda: application.reconcile([], dry_run=True)))
                runs["process"].append(timed(process))
            pool.shutdown()

            engine = application.db
            upgrade_s = statistics.median(timed(lambda: schema.upgrade(engine))[0] for _ in range(args.rounds))
            record_s = statistics.median(
                timed(lambda: queries.Store(engine).record_pass(last[-1]))[0] for _ in range(args.rounds)
            )
            states_s = statistics.median(
                timed(lambda: queries.Store(engine).states([w.name for w in settings.watches]))[0]
                for _ in range(args.rounds)
            )
        finally:
            application.close()
            if drop is not None:
                drop()

    wall = {k: [w for w, _ in v] for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    p, d, s, c, w = (statistics.median(wall[k]) for k in ("pass", "dry", "seq", "conc", "process"))
    heads = sum(n for (_, m, _), n in per_pass.items() if m == "HEAD")
    gets = sum(n for (_, m, _), n in per_pass.items() if m == "GET")
    bad = sum(n for (_, _, st), n in per_pass.items() if st != 200)
    expected_heads, expected_gets = args.tags + args.releases, args.releases
    requests_ok = heads == expected_heads and gets == expected_gets and bad == 0
    backend = make_url(database).get_backend_name()

    print(
        f"\nmachine: nproc={os.cpu_count()} (len(sched_getaffinity)={len(os.sched_getaffinity(0))}), "
        f"database={backend}, watches={len(settings.watches)}, rounds={args.rounds}"
    )
    print(f"config.load: {load_s:.3f} s   baseline pass (first, writes all rows): {baseline_s:.3f} s")
    print(f"last pass: {verdicts(last[-1])}")
    print(f"{'':34}{'wall':34}client CPU (median)")
    print(f"{'reconcile pass (writes)':34}{fmt(wall['pass'])}   {cpu['pass']:6.3f} s")
    print(f"{'reconcile pass (dry run)':34}{fmt(wall['dry'])}   {cpu['dry']:6.3f} s")
    print(f"{'reconcile, the whole process':34}{fmt(wall['process'])}   (a child: its CPU is not counted here)")
    print(f"{'(a) sequential floor, 1 Session':34}{fmt(wall['seq'])}   {cpu['seq']:6.3f} s")
    print(f"{f'(b) concurrent floor, {THREADS} threads':34}{fmt(wall['conc'])}   {cpu['conc']:6.3f} s")
    print(
        f"database part of a pass: writes - dry = {p - d:+.3f} s  (alone: schema.upgrade no-op {upgrade_s:.3f} s, "
        f"record_pass {record_s:.3f} s, states() {states_s:.3f} s)"
    )
    print(f"ratio pass / concurrent floor: {p / c:.2f}  (target <= {RATIO_CONCURRENT})")
    print(f"ratio pass / sequential floor: {p / s:.2f}  (target < {RATIO_SEQUENTIAL:.0f})")
    print(f"ratio whole process / concurrent floor: {w / c:.2f}  (target <= {RATIO_CONCURRENT})")
    print(
        f"requests per pass: HEAD {heads}, GET {gets}, non-200 {bad}; expected HEAD {expected_heads} "
        f"(1 per watch), GET {expected_gets} (1 tag-list page per release watch), non-200 0 -> "
        f"{'OK' if requests_ok else 'MISMATCH'}"
    )
    for name, met in (
        ("pass/concurrent <= 1.25", p / c <= RATIO_CONCURRENT),
        ("whole process/concurrent <= 1.25", w / c <= RATIO_CONCURRENT),
        ("pass/sequential < 1", p / s < RATIO_SEQUENTIAL),
        ("requests per pass", requests_ok),
    ):
        print(f"{'TARGET MET' if met else 'TARGET MISSED'}: {name}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tags", type=int, default=1000, help="tag watches, one distinct tag each")
    parser.add_argument("--releases", type=int, default=5, help="release watches, 20 version tags each")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes and floor rounds")
    parser.add_argument(
        "--database",
        help="database URL (default: a SQLite file in the temp dir); "
        "a PostgreSQL URL gets a fresh schema, dropped at the end",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="reconcile-bench-") as work:
        bench(args, Path(work))
    return 0


if __name__ == "__main__":
    sys.exit(main())

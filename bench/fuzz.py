"""A deeper fuzz run of every boundary than the suite's: the property-based tests of tests/test_fuzz_*.py with
RECONCILER_FUZZ_EXAMPLES generated inputs each (random, not the suite's fixed ones), then one line per property:
the examples tried, how long it took, and whether it found a crash.

    .venv/bin/python bench/fuzz.py [--examples 2000] [-k EXPRESSION]

Not a test: it prints its figures and exits 0 when no property failed, 1 when one did (its falsifying example is
in the pytest output above the table). Needs what the suite needs (docker-registry for the registry fuzzing).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_STATS = re.compile(r"^(tests/test_fuzz_\S+::\S+):\s*$")
_PASSING = re.compile(r"(\d+) passing, (\d+) failing, and (\d+) invalid")
_TIME = re.compile(r"Typical runtimes: ([^,]+)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=2000, help="generated inputs per property (default 2000)")
    parser.add_argument("-k", dest="keyword", help="only the properties pytest -k selects")
    args = parser.parse_args()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"]
    command += [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_fuzz_*.py"))]
    if args.keyword:
        command += ["-k", args.keyword]
    started = time.monotonic()
    run = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "RECONCILER_FUZZ_EXAMPLES": str(args.examples)},
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.monotonic() - started
    rows: dict[str, list[int | str]] = {}
    current = None
    for line in run.stdout.splitlines():
        if found := _STATS.match(line.strip()):
            current = found.group(1)
            rows[current] = [0, 0, 0, ""]
        elif current and (counts := _PASSING.search(line)):  # one line per phase: explicit, generate, shrink
            for i in range(3):
                rows[current][i] = int(rows[current][i]) + int(counts.group(i + 1))
        elif current and (typical := _TIME.search(line)):
            rows[current][3] = typical.group(1)
    failed = [line for line in run.stdout.splitlines() if line.startswith("FAILED")]
    if failed or run.returncode not in (0, 5):  # the failures (falsifying examples), not the statistics after them
        start = run.stdout.find("= FAILURES =")
        end = run.stdout.find("Hypothesis Statistics", max(start, 0))
        print(run.stdout[max(start, 0) : end if end > 0 else None][:20000], run.stderr[-2000:], sep="\n")
    print(f"{'property':<110} {'passing':>8} {'failing':>8} {'invalid':>8}  typical")
    for name, (passing, failing, invalid, typical) in rows.items():
        print(f"{name:<110} {passing:>8} {failing:>8} {invalid:>8}  {typical}")
    total = sum(int(r[0]) + int(r[1]) for r in rows.values())
    crashed = sum(1 for r in rows.values() if r[1])
    print(f"\n{len(rows)} properties, {total} examples in {took:.0f}s; properties that found a crash: {crashed}")
    return 1 if failed or crashed else 0


if __name__ == "__main__":
    sys.exit(main())

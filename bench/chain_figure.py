"""The seed's chain, timed: from a new `fragalysis-frontend:latest` to the AWX staging launch for the stack image
its build pushed, with poll intervals and the build's own time left out.

It is the end-to-end test's chain (tests/test_chain.py): a real `docker-registry`, the fake GitHub, whose
`build main` run pushes a new `fragalysis-stack:latest` when it completes, and the fake AWX, on a fake clock whose
sleeps pass at once, so what is measured is reconciler's own work over two passes (the first dispatches the build
and waits for it; the second sees the new stack digest and launches AWX): wall time from the push to the moment
the fake AWX received the launch POST. Beside it, the floor measured in the same run: two passes over the same
watches with nothing to do.

    .venv/bin/python bench/chain_figure.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import app, config
from tests.fakes.awx import FakeAwx
from tests.fakes.github import FakeGitHub
from tests.support.awx_scenario import PRODUCTION, STAGING, TOKEN, FakeTime
from tests.support.registry import LocalRegistry, push_schema2
from tests.test_chain import CONFIG, GITHUB_TOKEN, STACK_REPOSITORY


class TimedAwx(FakeAwx):
    """Notes when each launch POST arrived (wall clock)."""

    launched_at: list[float]

    def handle(self, method: str, target: str, headers: Any, body: bytes) -> Any:
        if method == "POST" and target.rstrip("/").endswith("/launch"):
            self.launched_at.append(time.monotonic())
        return super().handle(method, target, headers, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalRegistry(Path(tmp) / "registry") as registry:
        clock = FakeTime()
        with TimedAwx(token=TOKEN) as awx, FakeGitHub(GITHUB_TOKEN, clock=clock) as github:
            awx.launched_at, awx.clock = [], clock
            awx.add_template(STAGING)
            awx.add_template(PRODUCTION)
            awx.script("successful", polls=3)
            github.add_repository(STACK_REPOSITORY)
            github.add_workflow(STACK_REPOSITORY, name="build main")
            github.script("success", polls=3)
            images = "bench/chain"
            github.on_complete(
                lambda run: push_schema2(registry.base, f"{images}/fragalysis-stack", "latest", label=f"r{run['id']}")
            )
            path = Path(tmp) / "config.toml"
            path.write_text(
                CONFIG.format(tmp=tmp, registry=registry.base, awx=awx.base, github=github.base, images=images)
            )
            settings = config.load(path, env={"AWX_TOKEN": TOKEN, "GITHUB_TOKEN": GITHUB_TOKEN})

            def reconcile() -> None:
                application = app.App(settings)
                try:
                    application.reconcile([], dry_run=False, clock=clock, sleep=clock.sleep)
                finally:
                    application.close()

            push_schema2(registry.base, f"{images}/fragalysis-stack", "latest", label="stack-0")
            push_schema2(registry.base, f"{images}/fragalysis-frontend", "latest", label="front-0")
            reconcile()  # the baseline
            chain, floor = [], []
            for n in range(1, args.rounds + 1):
                pushed = time.monotonic()
                push_schema2(registry.base, f"{images}/fragalysis-frontend", "latest", label=f"front-{n}")
                reconcile()  # dispatches the build and waits for it (its polls pass at once)
                reconcile()  # sees the new stack digest and launches AWX staging (and waits for it)
                if len(awx.launched_at) != n:
                    raise SystemExit(f"round {n}: {len(awx.launched_at)} AWX launches, expected {n}")
                chain.append(awx.launched_at[-1] - pushed)
                clock.advance(60)
                idle = time.monotonic()
                reconcile()
                reconcile()  # the floor: the same two passes with nothing to do
                floor.append(time.monotonic() - idle)
            dispatches = len(github.dispatches)
    ms = [1000 * s for s in chain]
    base = [1000 * s for s in floor]
    print(f"frontend push -> AWX staging launch, {args.rounds} rounds: median {statistics.median(ms):7.1f} ms, "
          f"max {max(ms):7.1f} ms")  # fmt: skip
    print(f"  floor, the same two passes with nothing to do:   median {statistics.median(base):7.1f} ms, "
          f"max {max(base):7.1f} ms")  # fmt: skip
    print(f"  builds dispatched {dispatches}, AWX launches {len(awx.launched_at)} (one each per round)")
    if dispatches != args.rounds:
        raise SystemExit(1)


if __name__ == "__main__":
    main()

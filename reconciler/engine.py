"""One pass over the watches: observe (concurrently), decide (pure), record (one transaction), report.

Each watch is isolated: a registry failure, or a bug, in one watch becomes that watch's `CheckFailure` and never
stops the pass. `dry_run` is the single gate that keeps a pass from writing. The engine receives its registry
and store through the small protocols below and reads time only from its injected clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol

from reconciler import decide, errors, model, policy

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class Registry(Protocol):
    def digest(self, image: model.ImageRef, tag: str) -> str: ...

    def tags(self, image: model.ImageRef) -> list[str]: ...


class StateStore(Protocol):
    def states(self, names: Sequence[str] | None = None) -> Mapping[str, model.WatchState]: ...

    def record_pass(self, report: model.RunReport) -> None: ...


class Engine:
    def __init__(
        self, *, registry: Registry, store: StateStore | None, clock: Clock = utc_now, workers: int = 16
    ) -> None:
        self._registry = registry
        self._store = store  # None: a database that does not exist yet, read as empty (dry runs)
        self._clock = clock
        self._workers = workers

    def observe(self, watch: model.Watch) -> model.CheckResult:
        """Ask the registry what the watch points at now; never raises."""
        try:
            if isinstance(watch.selector, model.TagSelector):
                tag = watch.selector.tag
            else:
                tag = policy.newest(self._registry.tags(watch.image), watch.selector) or ""
                if not tag:
                    raise errors.TagNotFound(
                        f"no tag of {watch.image} matches {watch.selector.describe()} (registry {watch.image.registry})"
                    )
            digest = self._registry.digest(watch.image, tag)
            return model.Observation(tag=tag, digest=digest, checked_at=self._clock())
        except errors.ReconcilerError as exc:
            return model.CheckFailure(message=str(exc), checked_at=self._clock())
        except Exception as exc:  # one watch's bug must not end the pass for the others
            log.exception("watch %s: unexpected error while checking %s", watch.name, watch.image)
            return model.CheckFailure(
                message=f"internal error while checking {watch.image}: {exc!r}", checked_at=self._clock()
            )

    def run_pass(self, watches: Sequence[model.Watch], *, dry_run: bool = False) -> model.RunReport:
        started = self._clock()
        states = self._store.states([w.name for w in watches]) if self._store is not None else {}
        if watches:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(watches)), thread_name_prefix="observe") as pool:
                results = list(pool.map(self.observe, watches))
        else:
            results = []
        now = self._clock()
        outcomes = tuple(
            self._outcome(watch, result, states.get(watch.name), now)
            for watch, result in zip(watches, results, strict=True)
        )
        report = model.RunReport(started_at=started, finished_at=self._clock(), dry_run=dry_run, outcomes=outcomes)
        if not dry_run and self._store is not None:
            self._store.record_pass(report)
        for outcome in outcomes:
            if outcome.changed or outcome.decision.verdict in (model.Verdict.DRIFT, model.Verdict.ERROR):
                log.info(
                    "watch %s: %s: %s",
                    outcome.watch.name,
                    outcome.decision.verdict.value,
                    outcome.decision.reason,
                    extra={
                        "watch": outcome.watch.name,
                        "image": str(outcome.watch.image),
                        "decision": outcome.decision.verdict.value,
                    },
                )
        log.info("%s%s", "dry run: " if dry_run else "", report.summary())
        return report

    @staticmethod
    def _outcome(
        watch: model.Watch, result: model.CheckResult, previous: model.WatchState | None, now: datetime
    ) -> model.WatchOutcome:
        decision = decide.decide(watch=watch, result=result, state=previous, now=now)
        state = decide.advance(state=previous, result=result, decision=decision, watch=watch.name, now=now)
        return model.WatchOutcome(
            watch=watch, result=result, decision=decision, state=state, changed=decide.changed(previous, state)
        )

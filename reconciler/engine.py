"""One pass over the watches: resume, observe (concurrently), decide (pure), record, act, report.

Each watch is isolated: a registry failure, or a bug, in one watch becomes that watch's `CheckFailure` and never
stops the pass. `dry_run` is the single gate that keeps a pass from writing or acting: it previews the exact
requests instead. The engine receives its registry, store and deployer through the small protocols below and
reads time only from its injected clock.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from reconciler import decide, deploy, errors, model, policy

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
_T = TypeVar("_T")
_R = TypeVar("_R")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Registry(Protocol):
    def digest(self, image: model.ImageRef, tag: str) -> str: ...

    def tags(self, image: model.ImageRef) -> list[str]: ...


class StateStore(Protocol):
    def states(self, names: Sequence[str] | None = None) -> Mapping[str, model.WatchState]: ...

    def record_pass(self, report: model.RunReport) -> None: ...


class ActionLog(Protocol):
    def last_actions(self, names: Sequence[str] | None = None) -> Mapping[str, model.ActionRecord]: ...


class Engine:
    def __init__(
        self,
        *,
        registry: Registry,
        store: StateStore | None,
        clock: Clock = utc_now,
        workers: int = 16,
        actions: ActionLog | None = None,
        deployer: deploy.Deployer | None = None,
    ) -> None:
        self._registry = registry
        self._store = store  # None: a database that does not exist yet, read as empty (dry runs)
        self._actions = actions
        self._deployer = deployer
        self._clock = clock
        self._workers = workers

    def _map(self, fn: Callable[[_T], _R], items: Sequence[_T], name: str) -> list[_R]:
        if not items:
            return []
        with ThreadPoolExecutor(max_workers=min(self._workers, len(items)), thread_name_prefix=name) as pool:
            return list(pool.map(fn, items))

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
        acting = not dry_run and self._deployer is not None
        resumed = {r.watch: r for r in self._deployer.resume(watches)} if acting and self._deployer else {}
        names = [w.name for w in watches]
        states = self._store.states(names) if self._store is not None else {}
        last = self._actions.last_actions(names) if self._actions is not None else {}
        results = self._map(self.observe, watches, "observe")
        now = self._clock()
        outcomes = [
            self._outcome(w, r, states.get(w.name), last.get(w.name), now)
            for w, r in zip(watches, results, strict=True)
        ]
        if not dry_run and self._store is not None:
            self._store.record_pass(model.RunReport(started, self._clock(), dry_run, tuple(outcomes)))
        due = [o for o in outcomes if o.decision.verdict is model.Verdict.DRIFT and o.watch.action is not None]
        if dry_run:
            previews = {o.watch.name: self._preview(o) for o in due}
            outcomes = [dataclasses.replace(o, preview=previews.get(o.watch.name)) for o in outcomes]
        elif acting:
            done = dict(zip([o.watch.name for o in due], self._map(self._act, due, "act"), strict=True))
            done.update({k: v for k, v in resumed.items() if k not in done})
            outcomes = [self._after(o, done.get(o.watch.name)) for o in outcomes]
        report = model.RunReport(started, self._clock(), dry_run, tuple(outcomes))
        self._log(report)
        return report

    def _act(self, outcome: model.WatchOutcome) -> model.ActionRecord | None:
        assert self._deployer is not None and isinstance(outcome.result, model.Observation)
        target = deploy.target_of(outcome.watch, outcome.result, outcome.state.deployed)
        try:
            return self._deployer.act(
                outcome.watch, target, attempt=decide.next_attempt(outcome.action, outcome.result)
            )
        except (errors.LeaseLost, errors.Stopped, errors.StoreError):
            raise
        except Exception:  # one watch's bug must not end the pass for the others
            log.exception("watch %s: unexpected error while acting", outcome.watch.name)
            return None

    def _preview(self, outcome: model.WatchOutcome) -> dict[str, object]:
        assert self._deployer is not None and isinstance(outcome.result, model.Observation)
        target = deploy.target_of(outcome.watch, outcome.result, outcome.state.deployed)
        try:
            return self._deployer.describe(outcome.watch, target)
        except errors.ActuatorError as exc:
            return {"error": str(exc)}

    @staticmethod
    def _after(outcome: model.WatchOutcome, record: model.ActionRecord | None) -> model.WatchOutcome:
        if record is None:
            return outcome
        state = outcome.state
        if record.status is model.ActionStatus.SUCCEEDED and record.finished_at is not None:
            state = dataclasses.replace(
                state, deployed=model.Deployed(tag=record.tag, digest=record.digest, at=record.finished_at)
            )
        return dataclasses.replace(outcome, action=record, acted=True, state=state)

    @staticmethod
    def _outcome(
        watch: model.Watch,
        result: model.CheckResult,
        previous: model.WatchState | None,
        last_action: model.ActionRecord | None,
        now: datetime,
    ) -> model.WatchOutcome:
        decision = decide.decide(watch=watch, result=result, state=previous, now=now, last_action=last_action)
        state = decide.advance(state=previous, result=result, decision=decision, watch=watch.name, now=now)
        return model.WatchOutcome(
            watch=watch,
            result=result,
            decision=decision,
            state=state,
            changed=decide.changed(previous, state),
            action=last_action,
        )

    @staticmethod
    def _log(report: model.RunReport) -> None:
        for outcome in report.outcomes:
            if outcome.changed or outcome.decision.verdict not in (model.Verdict.IN_SYNC, model.Verdict.SETTLING):
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
        log.info("%s%s", "dry run: " if report.dry_run else "", report.summary())

"""One pass over the watches: resume, observe (concurrently), decide (pure), record, act, report.

Each watch is isolated: a registry failure, or a bug, in one watch becomes that watch's `CheckFailure` and never
stops the pass. `dry_run` is the single gate that keeps a pass from writing or acting: it previews the exact
requests instead. The engine receives its registry, store and deployer through the small protocols below and
reads time only from its injected clock.

The lease (`keep_alive`, `confirm`): it is renewed while the registry is asked, however slowly it answers, and
confirmed before the pass records anything and again right before each action is planned, where the watch's state
and newest action are read afresh and decided again — so a pass that lost the lease, or whose snapshot went
stale meanwhile, plans nothing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from reconciler import decide, deploy, errors, events, model, policy

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
HEARTBEAT = 1.0  # seconds between lease renewals (and stop checks) while the registry is being asked
WORKERS = 16  # watches a pass checks at once (the registry session pools as many connections)
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

    def rejections(self, names: Sequence[str] | None = None) -> Mapping[tuple[str, str], model.ActionRecord]: ...


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
        keep_alive: Callable[[], None] = lambda: None,
        confirm: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._store = store  # None: a database that does not exist yet, read as empty (dry runs)
        self._actions = actions
        self._deployer = deployer
        self._clock = clock
        self._workers = workers
        self._keep_alive = keep_alive  # renews the lease when due; raises LeaseLost or Stopped
        self._confirm = confirm  # renews the lease now; raises LeaseLost or Stopped

    def _map(self, fn: Callable[[_T], _R], items: Sequence[_T], name: str, *, heartbeat: bool) -> list[_R]:
        """`fn` over `items` on a pool. With `heartbeat`, the lease is kept alive meanwhile, and a stop or a lost
        lease ends the wait at once (the workers then finish on their own: their sleeps wake on the same stop);
        without it, the workers keep the lease alive themselves, and are waited for."""
        if not items:
            return []
        pool = ThreadPoolExecutor(max_workers=min(self._workers, len(items)), thread_name_prefix=name)
        try:
            futures = [pool.submit(fn, item) for item in items]
            pending = set(futures)
            while heartbeat and pending:
                done, pending = wait(pending, timeout=HEARTBEAT, return_when=FIRST_EXCEPTION)
                for future in done:
                    if (failure := future.exception()) is not None:
                        raise failure
                if pending:
                    self._keep_alive()
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=not heartbeat, cancel_futures=True)

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
        except (errors.Stopped, errors.LeaseLost):
            raise
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
        rejected = self._rejections(names)
        results = self._map(self.observe, watches, "observe", heartbeat=True)
        now = self._clock()
        outcomes = [
            self._outcome(w, r, states.get(w.name), last.get(w.name), now, rejected=rejected)
            for w, r in zip(watches, results, strict=True)
        ]
        if not dry_run and self._store is not None:
            self._confirm()  # a pass that lost the lease records nothing, not even a baseline
            self._store.record_pass(model.RunReport(started, self._clock(), dry_run, tuple(outcomes)))
        due = [o for o in outcomes if o.decision.verdict is model.Verdict.DRIFT and o.watch.action is not None]
        if dry_run:
            previews = {o.watch.name: self._preview(o) for o in due}
            outcomes = [dataclasses.replace(o, preview=previews.get(o.watch.name)) for o in outcomes]
        elif acting:
            outcomes = [self._withdraw(o) if decide.withdrawn(o.state, o.action) is not None else o for o in outcomes]
            acted = {o.watch.name: o for o in self._map(self._act, due, "act", heartbeat=False)}
            outcomes = [acted.get(o.watch.name) or self._after(o, resumed.get(o.watch.name)) for o in outcomes]
        report = model.RunReport(started, self._clock(), dry_run, tuple(outcomes))
        self._log(report)
        return report

    def _act(self, outcome: model.WatchOutcome) -> model.WatchOutcome:
        """Carry out a due action: under a confirmed lease, and only if the watch's state read afresh still says
        so (another pass, process or person may have moved it since the snapshot this pass decided on)."""
        assert self._deployer is not None and isinstance(outcome.result, model.Observation)
        watch, result = outcome.watch, outcome.result
        self._confirm()
        state = self._store.states([watch.name]).get(watch.name) if self._store is not None else None
        last = self._actions.last_actions([watch.name]).get(watch.name) if self._actions is not None else None
        rejection = self._rejections([watch.name]).get((watch.name, result.digest))
        decision = decide.decide(
            watch=watch, result=result, state=state, now=self._clock(), last_action=last, rejection=rejection
        )
        if decision.verdict is not model.Verdict.DRIFT:
            log.info("watch %s: no longer due: %s", watch.name, decision.reason, extra={"watch": watch.name})
            return dataclasses.replace(outcome, decision=decision, action=last)
        target = deploy.target_of(watch, result, state.deployed if state is not None else None)
        attempt, outages = decide.next_attempt(last, result, watch.action)
        try:
            record = self._deployer.act(watch, target, attempt=attempt, outages=outages, last=last)
        except (errors.LeaseLost, errors.Stopped, errors.StoreError):
            raise
        except Exception:  # one watch's bug must not end the pass for the others
            log.exception("watch %s: unexpected error while acting", watch.name)
            record = None
        return self._after(outcome, record)

    def _rejections(self, names: Sequence[str]) -> Mapping[tuple[str, str], model.ActionRecord]:
        return self._actions.rejections(names) if self._actions is not None else {}

    def _withdraw(self, outcome: model.WatchOutcome) -> model.WatchOutcome:
        """An action waiting for approval that no longer stands for what is observed: closed, under the lease."""
        assert self._deployer is not None and outcome.action is not None
        why = decide.withdrawn(outcome.state, outcome.action)
        assert why is not None
        self._confirm()
        return self._after(outcome, self._deployer.withdraw(outcome.action, why))

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
        *,
        rejected: Mapping[tuple[str, str], model.ActionRecord],
    ) -> model.WatchOutcome:
        rejection = rejected.get((watch.name, result.digest)) if isinstance(result, model.Observation) else None
        decision = decide.decide(
            watch=watch, result=result, state=previous, now=now, last_action=last_action, rejection=rejection
        )
        state = decide.advance(state=previous, result=result, decision=decision, watch=watch.name, now=now)
        outcome = model.WatchOutcome(
            watch=watch,
            result=result,
            decision=decision,
            state=state,
            changed=decide.changed(previous, state),
            action=last_action,
        )
        return dataclasses.replace(outcome, notices=tuple(events.of_check(watch, previous, outcome, now)))

    @staticmethod
    def _log(report: model.RunReport) -> None:
        for outcome in report.outcomes:
            if outcome.decision.verdict is model.Verdict.BLOCKED:  # its missing secret is named once, at start
                continue
            if outcome.changed or outcome.decision.verdict not in (model.Verdict.IN_SYNC, model.Verdict.SETTLING):
                # A registry failure is said once per pass, here; the action's outcome is logged where it ends.
                level = logging.WARNING if outcome.decision.verdict is model.Verdict.ERROR else logging.INFO
                log.log(
                    level,
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

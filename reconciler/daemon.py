"""`reconciler run`: the long-running daemon.

APScheduler 3.x runs one job per watch at its interval (with jitter, `coalesce=True`) and one job in which a
LeaseKeeper (`reconciler.daemon_lease`) holds the lease. Only the instance holding it acts: taking it starts a pass
for each watch and a prune; standing by pauses the watches' jobs.
A trigger (POST /reconcile, a webhook) that arrives while that watch's pass runs is never dropped: the pass runs
again right after. Waitress serves the endpoints. SIGTERM/SIGINT set the stop event: a running action notices it at
its next poll (its sleeps wake at once) and stops, left `launched` to be resumed; the scheduler and server stop and
the lease is released, well within 10 s. The daemon receives everything it needs from the composition root.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from reconciler import approval_desk, daemon_lease, endpoints, errors, http_server, lease, metrics, model, readiness

log = logging.getLogger(__name__)


class _SkippedRuns(logging.Filter):
    """APScheduler warns of every run it skips while one is still going: a pass waiting for AWX, or the lease job
    held by a stalled database, which the daemon reports itself, once a minute."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


logging.getLogger("apscheduler.scheduler").addFilter(_SkippedRuns())
LEASE_JOB = "_lease"
PRUNE_JOB = "_prune"
PRUNE_EVERY = 3600.0  # seconds between prunes (`[reconciler].keep`); the first when the lease is taken
STOP_WAIT = 8.0  # seconds a stop waits for running passes to leave their actions resumable
PassRunner = Callable[[Sequence[str]], model.RunReport]


class Daemon:
    def __init__(
        self,
        *,
        watches: Sequence[model.Watch],
        run_pass: PassRunner,
        holder: lease.Lease,
        status: Callable[[], dict[str, Any]],
        database_ok: Callable[[], bool],
        counters: metrics.Metrics,
        server: endpoints.Server,
        approvals: approval_desk.Approvals,
        prune: Callable[[], object] = lambda: None,
        stop: threading.Event | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._watches = {w.name: w for w in watches}
        self._run_pass = run_pass
        self.stop = stop or threading.Event()
        self._keeper = daemon_lease.LeaseKeeper(
            holder, stop=self.stop, monotonic=monotonic, stand_by=self._pause_watches, taken=self._start_acting
        )
        self._status = status
        self._prune = prune
        self._database_ok = database_ok
        self._metrics = counters
        self._server_settings = server
        self._desk = approval_desk.Desk(
            approvals,
            watches=self._watches,
            acting=lambda: self._keeper.acting,
            trigger=self.trigger,
            can_approve=server.token is not None,
        )
        self._clock = clock
        self._monotonic = monotonic
        self._readiness = readiness.Readiness(watches, clock)
        self._seen_internal: set[str] = set()  # (job, error type) already logged with a traceback
        self._passes = threading.Lock()
        self._running: set[str] = set()  # watches whose pass runs now
        self._again: set[str] = set()  # watches triggered while their pass ran: run once more right after
        # Two instances per watch job: a trigger's run while a pass runs only marks it to run again (see _poll);
        # with one, APScheduler would skip it, and a trigger could be dropped.
        self._scheduler = BackgroundScheduler(
            timezone=UTC, job_defaults={"coalesce": True, "max_instances": 2, "misfire_grace_time": None}
        )
        self._http = http_server.HttpServer(self._endpoints(), host=server.host, port=server.port)

    @property
    def port(self) -> int:
        return self._http.port

    def _endpoints(self) -> endpoints.Endpoints:
        callbacks = endpoints.Callbacks(
            alive=lambda: self._scheduler.running and not self.stop.is_set(),
            ready=self._ready,
            status=self._status,
            metrics=self._metrics.exposition,
            reconcile=self.trigger,
            repository=self._trigger_repository,
            page=self._desk.page,
            decide=self._desk.decide,
        )
        s = self._server_settings
        return endpoints.Endpoints(
            callbacks=callbacks, token=s.token, webhook_secret=s.webhook_secret, loopback=s.loopback
        )

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> None:
        for watch in self._watches.values():
            trigger = IntervalTrigger(seconds=watch.interval.total_seconds(), jitter=watch.jitter.total_seconds())
            self._scheduler.add_job(self._poll, trigger, id=watch.name, args=[watch.name], next_run_time=None)
        every = max(self._keeper.ttl.total_seconds() / 3, 1.0)
        self._scheduler.add_executor(ThreadPoolExecutor(1), "lease")  # never queued behind slow passes
        self._scheduler.add_job(
            lambda: self._guarded("lease", self._keeper.hold),
            IntervalTrigger(seconds=every),
            id=LEASE_JOB,
            name="hold the lease",
            next_run_time=self._clock(),
            executor="lease",
        )
        self._scheduler.add_executor(ThreadPoolExecutor(1), "housekeeping")  # a long first prune delays no pass
        self._scheduler.add_job(
            self._housekeeping, IntervalTrigger(seconds=PRUNE_EVERY), id=PRUNE_JOB, executor="housekeeping"
        )
        if any(w.approve for w in self._watches.values()):
            every = IntervalTrigger(seconds=approval_desk.APPROVALS_EVERY)
            self._scheduler.add_job(lambda: self._guarded("approvals", self._desk.look), every, id="_approvals")
        self._scheduler.start()
        self._http.start()
        log.info("serving on %s:%d; watches: %d", self._server_settings.host, self.port, len(self._watches))

    def shutdown(self) -> None:
        """Stop within STOP_WAIT: passes see `stop` at their next poll and leave their actions open to be resumed;
        one stuck in I/O (a stalled database) is not waited for past it, as the outbox survives that like a crash."""
        self.stop.set()
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
        deadline = self._monotonic() + STOP_WAIT
        while self._busy() and self._monotonic() < deadline:
            time.sleep(0.05)  # waiting for the passes' own threads to notice the stop
        self._http.stop()
        if self._keeper.acting and not self._busy():
            self._keeper.release(wait=2.0)
        log.info("stopped")

    def _busy(self) -> bool:
        with self._passes:
            return bool(self._running)

    def run_forever(self) -> None:
        """Start, then block until SIGTERM or SIGINT, then stop cleanly."""

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        while not self.stop.wait(1.0):
            self._keeper.watch()  # the lease's end, even while a renewal hangs
        self.shutdown()

    # --- jobs -----------------------------------------------------------------------------------------------
    def _guarded(self, job: str, run: Callable[[], None]) -> None:
        """A scheduled job never dies silently, nor takes the scheduler with it: an unexpected error is logged
        (with its traceback the first time), counted in reconciler_internal_errors_total, and reported by /readyz
        until the job next succeeds; the job keeps its schedule."""
        try:
            run()
        except Exception as exc:
            kind = f"{job}:{type(exc).__name__}"
            first = kind not in self._seen_internal
            self._seen_internal.add(kind)
            log.error("internal error in %s: %s: %s", job, type(exc).__name__, exc, exc_info=first)
            self._metrics.internal_errors.labels(job=job).inc()
            self._readiness.job_failed(job, f"internal error in {job}: {type(exc).__name__}")
        else:
            self._readiness.job_worked(job)

    def _housekeeping(self) -> None:
        """The prune, by the daemon that holds the lease (a standby's would only repeat it)."""
        if self._keeper.acting and not self.stop.is_set():
            self._guarded("prune", self._prune_now)

    def _prune_now(self) -> None:
        try:
            self._prune()
        except errors.StoreError as exc:  # the database is away: the lease job says so; the next hour tries again
            log.warning("the prune did not finish: %s", exc)

    def _start_acting(self) -> None:
        """The lease is taken: a pass for every watch now, then on schedule, and a prune, then hourly."""
        with contextlib.suppress(errors.Stopped, JobLookupError):  # stopping meanwhile: nothing to start
            self.trigger(list(self._watches))
            self._scheduler.modify_job(PRUNE_JOB, next_run_time=self._clock())

    def _pause_watches(self) -> None:
        """Standing by: the watches' jobs wait until the lease is taken again."""
        for name in self._watches:
            self._scheduler.pause_job(name)

    def _poll(self, name: str) -> None:
        self._guarded(f"watch {name}", lambda: self._poll_now(name))

    def _poll_now(self, name: str) -> None:
        """One pass for one watch, then another for each trigger that arrived meanwhile."""
        with self._passes:
            if name in self._running:  # a trigger while the pass runs: run it again right after
                self._again.add(name)
                return
            self._running.add(name)
        try:
            while self._keeper.acting and not self.stop.is_set():
                self._pass(name)
                with self._passes:
                    if name not in self._again:
                        break
                    self._again.discard(name)
        finally:
            with self._passes:
                self._running.discard(name)
                self._again.discard(name)

    def _pass(self, name: str) -> None:
        try:
            report = self._run_pass([name])
        except errors.Stopped:
            log.info("watch %s: stopped while acting; its action will be resumed", name)
            return
        except (errors.LeaseLost, errors.StoreError) as exc:  # lost, or the database is away: the keeper says so
            self._keeper.failed(exc)
            return
        except errors.ReconcilerError as exc:
            log.error("watch %s: pass failed: %s", name, exc, extra={"watch": name})
            return
        self._metrics.record(report)
        self._readiness.passed(report)

    def trigger(self, names: Sequence[str]) -> list[str]:
        """Run these watches' passes now (all when empty); a pass already running runs once more right after.
        Unknown names are a ConfigError; a standby instance raises LockHeld and runs nothing."""
        for name in names:
            if name not in self._watches:
                raise errors.ConfigError(f"no watch named {name!r}")
        if self.stop.is_set():
            raise errors.Stopped("stopping: no pass is started")
        if not self._keeper.acting:
            raise errors.LockHeld("standby: another instance holds the lease and runs the passes")
        chosen = list(names) or list(self._watches)
        with self._passes:
            self._again.update(n for n in chosen if n in self._running)
        try:
            for name in chosen:
                self._scheduler.modify_job(name, next_run_time=self._clock())
        except JobLookupError:  # the scheduler is shutting down
            return []
        return chosen

    def _trigger_repository(self, image: model.ImageRef) -> list[str]:
        names = [w.name for w in self._watches.values() if w.image == image]
        if not self._keeper.acting:
            raise errors.LockHeld("standby: another instance holds the lease and runs the passes")
        return self.trigger(names) if names else []

    def _ready(self) -> tuple[bool, str]:
        return self._readiness.answer(database_ok=self._database_ok, acting=self._keeper.acting)

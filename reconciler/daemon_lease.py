"""The daemon's hold on the lease: whether this instance acts or stands by.

A LeaseKeeper owns that state. On each run of the daemon's lease job it takes the lease when it is free (its
`taken` callback then starts a pass for every watch and a prune) or, while acting, confirms it. When the lease is
lost — taken by another, or past its end unconfirmed while the database did not answer, by this process's clock,
which the daemon's watchdog checks through `watch` even while a renewal hangs — it stands by: its `stand_by`
callback pauses the watches, and it takes the lease again only by the normal rules. A database outage is one warning
a minute, not a crash. On a clean stop it releases the lease. It knows nothing of the scheduler: the daemon gives it
what it needs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from reconciler import errors, lease

log = logging.getLogger("reconciler.daemon")  # the daemon's log: what it says of the lease, as it always has
OUTAGE_LOG_EVERY = 60.0  # seconds between the warnings while the database does not answer


class LeaseKeeper:
    def __init__(
        self,
        holder: lease.Lease,
        *,
        stop: threading.Event,
        monotonic: Callable[[], float],
        stand_by: Callable[[], None],
        taken: Callable[[], None],
    ) -> None:
        self._lease = holder
        self._lease_ttl = holder.ttl
        self._stop = stop
        self._monotonic = monotonic
        self._stand_by = stand_by  # pauses the watches' jobs
        self._taken = taken  # a pass for every watch now, and a prune
        self._acting = False
        self._standby_logged = False
        self._renewed_at = 0.0  # monotonic time of the last renewal that the database confirmed
        self._outage_logged_at: float | None = None

    @property
    def acting(self) -> bool:
        """Whether this instance holds the lease and runs the passes."""
        return self._acting

    @property
    def ttl(self) -> timedelta:
        return self._lease_ttl

    def hold(self) -> None:
        """One run of the lease job: confirm the lease while acting, else try to take it."""
        if self._stop.is_set():
            return
        try:
            if self._acting:
                self._lease.confirm()  # every run: waiting for a third to pass would renew every other run
                self._renewed_at = self._monotonic()
            else:
                self._take_lease()
        except errors.LeaseLost as exc:
            self._to_standby(str(exc))
        except errors.StoreError as exc:
            self._database_away(exc)
            return
        if self._outage_logged_at is not None:
            log.info("the database answers again")
            self._outage_logged_at = None

    def _take_lease(self) -> None:
        try:
            self._lease.acquire()
        except errors.LockHeld as exc:
            if not self._standby_logged:
                log.warning("standby: %s; taking over when it is released or expires", exc)
                self._standby_logged = True
            return
        self._renewed_at = self._monotonic()  # before `_acting`, which the watchdog reads with it
        self._acting, self._standby_logged = True, False
        log.info("holding the lease as %s: acting", self._lease.holder)
        self._taken()

    def watch(self) -> None:
        """The lease's end, by this process's clock, even while a renewal hangs on a stalled database: past it
        unconfirmed, the lease is taken as lost and the daemon stands by."""
        overdue = self._monotonic() - self._renewed_at
        if self._acting and overdue > self._lease_ttl.total_seconds():
            self._database_away(errors.StoreError(f"the database has not confirmed the lease for {overdue:.0f}s"))

    def _database_away(self, exc: errors.StoreError) -> None:
        """One warning a minute while the database is away; past the lease's end, stand by (it is lost)."""
        now = self._monotonic()
        if self._outage_logged_at is None or now - self._outage_logged_at >= OUTAGE_LOG_EVERY:
            log.warning("%s; trying again", exc)
            self._outage_logged_at = now
        if self._acting and now - self._renewed_at > self._lease_ttl.total_seconds():
            self._lease.forfeit()  # running passes stop acting at their next renewal
            self._to_standby("the lease expired while the database did not answer")

    def failed(self, exc: errors.LeaseLost | errors.StoreError) -> None:
        """A pass found the lease lost (stand by) or the database away (one warning a minute)."""
        if isinstance(exc, errors.LeaseLost):
            self._to_standby(str(exc))
        else:
            self._database_away(exc)

    def _to_standby(self, why: str) -> None:
        self._acting = False
        self._stand_by()
        log.error("%s: standing by", why)

    def release(self, wait: float) -> None:
        """On a clean stop: give the lease up, waiting at most `wait` seconds (it expires by itself anyway)."""
        releasing = threading.Thread(target=self._release, name="release", daemon=True)
        releasing.start()
        releasing.join(timeout=wait)

    def _release(self) -> None:
        try:
            self._lease.release()
        except errors.StoreError as exc:
            log.warning("could not release the lease (it expires by itself): %s", exc)

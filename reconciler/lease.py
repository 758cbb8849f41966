"""The lease that lets one process of an instance (`[reconciler].instance`) act at a time (SQLite and PostgreSQL
alike); each instance has its own (`name_of`).

A row in `leases` names its holder (`host:pid:nonce`) and when it expires, on the database's clock. The holder
renews it while it acts; `confirm` renews it at once and is called right before anything is planned. An expired
lease is lost: renewal fails, `LeaseLost` is raised, and the holder stops acting; it may take the lease again only
through `acquire`, by the same rules as anyone else. A holder on this host whose process is gone is known dead, so
its lease is taken at once instead of waiting for expiry — a crashed `reconcile` does not block the next one.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol

from reconciler import errors

log = logging.getLogger(__name__)
NAME = "actions"  # the default instance's lease: the name it had before instances, so old and new never both act
TTL = timedelta(seconds=60)


def name_of(instance: str) -> str:
    """The lease an instance (`[reconciler].instance`) holds: daemons of different instances act side by side on
    one database, each for its own watches; two of the same instance take turns."""
    return NAME if instance == "default" else f"{NAME}:{instance}"


class LeaseStore(Protocol):
    def acquire(self, *, name: str, holder: str, ttl: timedelta, steal_from: str | None = None) -> bool: ...

    def renew(self, *, name: str, holder: str, ttl: timedelta) -> bool: ...

    def release(self, *, name: str, holder: str) -> None: ...

    def holder(self, *, name: str) -> str | None: ...


def _dead_here(holder: str) -> bool:
    """Whether `holder` is a process of this host that no longer exists."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


class Lease:
    """This process's claim on the lease. `monotonic` only schedules renewals; validity is the database's."""

    def __init__(
        self,
        *,
        store: LeaseStore,
        ttl: timedelta = TTL,
        name: str = NAME,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl
        self._monotonic = monotonic
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew_at: float | None = None  # None: not held
        self._lost = False
        self.tenure = 0  # counts the times the lease was taken: a pass of an earlier tenure must not act in a later
        self._lock = threading.Lock()

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    def acquire(self) -> None:
        """Take the lease (free, expired, or held by a dead process of this host); else raise `LockHeld`."""
        with self._lock:
            if self._store.acquire(name=self.name, holder=self.holder, ttl=self._ttl):
                self._held()
                return
            other = self._store.holder(name=self.name)
            if other is not None and _dead_here(other):
                log.warning("taking over the lease of %s, whose process is gone", other)
                if self._store.acquire(name=self.name, holder=self.holder, ttl=self._ttl, steal_from=other):
                    self._held()
                    return
        raise errors.LockHeld(f"another instance ({other or 'unknown'}) holds the lease; nothing was done")

    def _held(self) -> None:
        self._renew_at, self._lost = self._monotonic() + self._ttl.total_seconds() / 3, False
        self.tenure += 1

    def keep_alive(self, tenure: int | None = None) -> None:
        """Renew once a third of the lease has passed; raise `LeaseLost` if it expired, another took it, or (given
        the `tenure` a pass started in) it was lost and taken again since."""
        with self._lock:
            self._check(tenure)
            if not self._lost and self._renew_at is not None and self._monotonic() < self._renew_at:
                return
            self._renew()

    def confirm(self, tenure: int | None = None) -> None:
        """Renew now and make sure the lease is still ours: called right before planning an action."""
        with self._lock:
            self._check(tenure)
            self._renew()

    def _check(self, tenure: int | None) -> None:
        if tenure is not None and tenure != self.tenure:
            raise errors.LeaseLost(
                "this pass began under an earlier hold of the lease, which was lost since; it stopped acting, "
                "nothing more was planned and open actions are left to be resumed"
            )

    def _renew(self) -> None:
        if (
            self._lost
            or self._renew_at is None
            or not self._store.renew(name=self.name, holder=self.holder, ttl=self._ttl)
        ):
            self._lost, self._renew_at = True, None
            raise errors.LeaseLost(
                "this instance's lease expired or was taken by another instance, so it stopped acting; "
                "nothing more was planned and open actions are left to be resumed"
            )
        self._renew_at = self._monotonic() + self._ttl.total_seconds() / 3

    def forfeit(self) -> None:
        """Take the lease as lost (its end passed unconfirmed): renewals fail until `acquire` succeeds again.
        Without the lock, which a renewal stuck on a stalled database may hold: one flag, set atomically."""
        self._lost = True

    @property
    def held(self) -> bool:
        return self._renew_at is not None and not self._lost

    def release(self) -> None:
        with self._lock:
            if self._renew_at is not None:
                self._store.release(name=self.name, holder=self.holder)
                self._renew_at = None

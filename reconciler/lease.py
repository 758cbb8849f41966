"""The lease that lets one instance act on a database at a time (SQLite and PostgreSQL alike).

A row in `leases` names its holder (`host:pid:nonce`) and when it expires; the holder renews it while it acts.
A holder on this host whose process is gone is known dead, so its lease is taken at once instead of waiting for
expiry — a crashed `reconcile` does not block the next one. Losing the lease while acting raises `LeaseLost`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from reconciler import errors

log = logging.getLogger(__name__)
NAME = "actions"
TTL = timedelta(seconds=60)


class LeaseStore(Protocol):
    def acquire_lease(
        self, *, name: str, holder: str, now: datetime, until: datetime, steal_from: str | None = None
    ) -> bool: ...

    def release_lease(self, *, name: str, holder: str) -> None: ...

    def lease_holder(self, *, name: str, now: datetime) -> str | None: ...


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
    except PermissionError:
        return False
    return False


class Lease:
    def __init__(
        self, *, store: LeaseStore, clock: Callable[[], datetime], ttl: timedelta = TTL, name: str = NAME
    ) -> None:
        self._store = store
        self._clock = clock
        self._ttl = ttl
        self.name = name
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._renew_at: datetime | None = None
        self._lost = False
        self._lock = threading.Lock()

    def acquire(self) -> None:
        now = self._clock()
        if self._store.acquire_lease(name=self.name, holder=self.holder, now=now, until=now + self._ttl):
            self._renew_at, self._lost = now + self._ttl / 3, False
            return
        other = self._store.lease_holder(name=self.name, now=now)
        if other is not None and _dead_here(other):
            log.warning("taking over the lease of %s, whose process is gone", other)
            if self._store.acquire_lease(
                name=self.name, holder=self.holder, now=now, until=now + self._ttl, steal_from=other
            ):
                self._renew_at, self._lost = now + self._ttl / 3, False
                return
        raise errors.LockHeld(f"another instance ({other or 'unknown'}) holds the lease; nothing was done")

    def keep_alive(self) -> None:
        """Renew when a third of the lease has passed; raise `LeaseLost` if another instance took it."""
        with self._lock:
            now = self._clock()
            if not self._lost and (self._renew_at is None or now < self._renew_at):
                return
            if self._lost or not self._store.acquire_lease(
                name=self.name, holder=self.holder, now=now, until=now + self._ttl
            ):
                self._lost, self._renew_at = True, None
                raise errors.LeaseLost(
                    "this instance lost the lease to another one; its open actions are left to be resumed"
                )
            self._renew_at = now + self._ttl / 3

    def release(self) -> None:
        if self._renew_at is not None:
            self._store.release_lease(name=self.name, holder=self.holder)
            self._renew_at = None

"""The courier: empties the notification outbox after the transactions that fill it, never in them.

Each queue (one target, one watch) is sent in its own thread, oldest first, one notice at a time, so a receiver
that hangs holds back only its own queue, and only for its target's timeout; a pass or a deployment never waits
for it. A failed delivery stops its queue and is tried again after a back-off (5 s, 10 s, … at most 5 min), for a
day (`KEEP`); then it is dropped, with a warning, and counted. What another process claimed, or left claimed when
it died, is taken over once its claim expires: a receiver may then see a notice twice, with the same `id`.

The daemon runs the courier for its life; a one-shot `reconcile` runs it during its pass and drains it at the end,
waiting at most the longest target timeout. Each send goes through `timed_send.Sender`, which holds it to its
target's timeout (`notify test` sends through it too). Receives its outbox and targets; builds neither.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Protocol

from reconciler import errors, model
from reconciler.notify import targets as notify_targets
from reconciler.notify.timed_send import OVERRUN, Sender

log = logging.getLogger(__name__)
KEEP = timedelta(hours=24)  # how long a notice is retried before it is dropped
BACKOFF_BASE = timedelta(seconds=5)
BACKOFF_MAX = timedelta(minutes=5)
HOLD_MARGIN = timedelta(seconds=5)  # a claim outlives the longest a send may take (timeout + OVERRUN) by this
HALT_CHECK = 0.1  # seconds between looks at the stop request while a drain waits
IDLE = 30.0  # seconds between rounds at most, when nothing wakes the courier (another process's new rows)
Counted = Callable[[str, str, str], None]  # (target, event, result): result is delivered | failed | dropped


class Box(Protocol):
    def claim(
        self,
        now: datetime,
        *,
        targets: Collection[str],
        hold: Callable[[str], timedelta],
        busy: Collection[tuple[str, str]] = (),
        only: tuple[str, str] | None = None,
    ) -> list[model.Outgoing]: ...

    def delivered(self, item: model.Outgoing, now: datetime) -> None: ...

    def retry(self, item: model.Outgoing, error: str, retry_at: datetime) -> None: ...

    def drop(self, item: model.Outgoing, error: str, now: datetime) -> None: ...

    def expired(self, before: datetime, now: datetime) -> list[model.Outgoing]: ...

    def due_in(self, targets: Collection[str], now: datetime) -> timedelta | None: ...


def backoff(attempts: int) -> timedelta:
    """How long after failed delivery number `attempts` the next is tried: 5 s, 10 s, 20 s, … at most 5 min."""
    return min(BACKOFF_BASE * (1 << min(max(attempts - 1, 0), 16)), BACKOFF_MAX)


def queue_of(item: model.Outgoing) -> tuple[str, str]:
    return item.target, item.watch or ""


class Courier:
    def __init__(
        self,
        *,
        box: Box,
        targets: Mapping[str, notify_targets.Target],
        clock: Callable[[], datetime],
        counted: Counted = lambda target, event, result: None,
        send: Callable[[notify_targets.Target, model.Outgoing], None] | None = None,
        keep: timedelta = KEEP,
        halt: threading.Event | None = None,
    ) -> None:
        self._box = box
        self._targets = dict(targets)
        self._clock = clock
        self._counted = counted
        self._send = send or Sender()
        self._keep = keep
        self._halt = halt or threading.Event()  # the process's stop request: a drain ends at once
        self._lock = threading.Lock()
        self._busy: set[tuple[str, str]] = set()  # queues being sent by this process
        self._failing: set[str] = set()  # targets whose last delivery failed (warned once until one works)
        self._seen_errors: set[str] = set()  # internal errors already logged with their traceback
        self._wakeup = threading.Event()  # the loop's: set by every wake, cleared by the loop
        self._woken = threading.Condition()  # a drain's: counts the wakes, so the loop clearing the event hides none
        self._wakes = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- life ------------------------------------------------------------------------------------------------
    def wake(self) -> None:
        """Rows were committed, or a queue ended: look now rather than at the next idle round."""
        with self._woken:
            self._wakes += 1
            self._woken.notify_all()
        self._wakeup.set()

    def start(self) -> None:
        """Deliver in the background from now: what is due, and (with no sender for a target) drop what expired."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="courier", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wakeup.clear()
            self.round()
            self._wakeup.wait(self._idle())

    def _guarded(self, run: Callable[[], object]) -> None:
        """A bug (or a row a newer version wrote) must not end delivery for the process's life: said, then on."""
        try:
            run()
        except Exception as exc:
            kind = type(exc).__name__
            log.error("notifications: internal error: %s: %s", kind, exc, exc_info=kind not in self._seen_errors)
            self._seen_errors.add(kind)

    def _idle(self) -> float:
        """Seconds until the next round: when a retry or an abandoned claim falls due, at most IDLE."""
        try:
            due = self._box.due_in(self._targets, self._clock())
        except errors.StoreError:
            return IDLE
        if due is None:
            return IDLE
        return min(max(due.total_seconds(), 0.05), IDLE)

    def drain(self, timeout: float) -> bool:
        """Deliver what is due now, waiting at most `timeout` seconds; whether nothing due was left behind."""
        end = time.monotonic() + timeout
        while True:
            with self._woken:
                seen = self._wakes
            started = self.round()
            if not started and not self.busy():
                return True
            with self._woken:
                while self._wakes == seen:  # until a queue ends or rows are recorded: then look again
                    left = end - time.monotonic()
                    if left <= 0 or self._halt.is_set():
                        return False
                    self._woken.wait(min(left, HALT_CHECK))

    def stop(self, timeout: float) -> None:
        """Deliver what is due within `timeout`, then stop looking; what is left is sent by the next process. With
        no time given, or the process asked to stop, nothing more is started."""
        if timeout > 0 and not self._halt.is_set():
            self.drain(timeout)
        self._stopping.set()
        self._wakeup.set()

    def busy(self) -> bool:
        with self._lock:
            return bool(self._busy)

    @property
    def longest_timeout(self) -> float:
        return max((t.timeout for t in self._targets.values()), default=0.0)

    # --- rounds ----------------------------------------------------------------------------------------------
    def round(self) -> int:
        """Drop what expired, then start a sender for each due queue not already being sent; how many started."""
        started: list[int] = []
        self._guarded(lambda: started.append(self._round()))
        return started[0] if started else 0

    def _round(self) -> int:
        try:
            now = self._clock()
            for item in self._box.expired(now - self._keep, now):
                self._dropped(item, item.last_error or "its target never took it")
            with self._lock:
                busy = set(self._busy)
            heads = self._box.claim(now, targets=self._targets, hold=self._hold, busy=busy) if self._targets else []
        except errors.StoreError as exc:
            log.warning("notifications wait: %s", exc)
            return 0
        for head in heads:
            with self._lock:
                self._busy.add(queue_of(head))
            threading.Thread(target=self._run_queue, args=(head,), name="notify-queue", daemon=True).start()
        return len(heads)

    def _hold(self, target: str) -> timedelta:
        return timedelta(seconds=self._targets[target].timeout + OVERRUN) + HOLD_MARGIN

    def _run_queue(self, head: model.Outgoing) -> None:
        """Send a queue's notices in order until it is empty, one fails, or the courier stops. Whatever goes wrong,
        its claim expires and a later round takes the queue over."""
        key = queue_of(head)
        try:
            self._guarded(lambda: self._send_queue(head, key))
        finally:
            with self._lock:
                self._busy.discard(key)
            self.wake()

    def _send_queue(self, head: model.Outgoing, key: tuple[str, str]) -> None:
        item: model.Outgoing | None = head
        try:
            while item is not None and self._deliver(item) and not self._stopping.is_set():
                found = self._box.claim(self._clock(), targets=[key[0]], hold=self._hold, only=key)
                item = found[0] if found else None
        except errors.StoreError as exc:
            log.warning("notifications wait: %s", exc)

    def _deliver(self, item: model.Outgoing) -> bool:
        target = self._targets[item.target]
        try:
            self._send(target, item)
        except errors.NotifyError as exc:  # kept and logged beside the target's name: once is enough
            return self._failed(item, str(exc).removeprefix(f"{item.target}: "))
        self._box.delivered(item, self._clock())
        self._counted(item.target, item.event, "delivered")
        if item.target in self._failing:
            self._failing.discard(item.target)
            log.info("notifications to %s are delivered again", item.target)
        log.debug("notification %s (%s, %s) delivered to %s", item.id, item.event, item.watch, item.target)
        return True

    def _failed(self, item: model.Outgoing, error: str) -> bool:
        """Back off, or drop a notice retried for a day; a dropped one lets the queue go on."""
        now = self._clock()
        if item.expired(now, self._keep):
            self._box.drop(item, error, now)
            self._dropped(item, error)
            return True
        self._box.retry(item, error, now + backoff(item.attempts + 1))
        self._counted(item.target, item.event, "failed")
        if item.target not in self._failing:
            self._failing.add(item.target)
            log.warning("notification to %s not delivered: %s; retrying with back-off for a day", item.target, error)
        return False

    def _dropped(self, item: model.Outgoing, error: str) -> None:
        self._counted(item.target, item.event, "dropped")
        hours = int(self._keep.total_seconds() // 3600)
        log.warning(
            "notification %s (%s, %s) to %s dropped: not delivered in %dh (%s)",
            item.id,
            item.event,
            item.watch or "no watch",
            item.target,
            hours,
            error,
        )

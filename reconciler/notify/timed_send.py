"""Sending one notice to a target now, bounded by the target's timeout, outside the outbox's bookkeeping.

- `Sender`: what the courier sends each notice through; a send past its deadline is abandoned, and its target gets
  no new send until it has ended.
- `sent_now`: `reconciler notify test`, one notice to each target at once, with what became of each.

Neither records, retries nor logs anything; a failure is a `NotifyError` naming the target, never its secret.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from reconciler import errors, model
from reconciler.notify import targets as notify_targets

OVERRUN = 1.0  # seconds a send may take past its target's timeout before it is given up on


class Sender:
    """Sends with a deadline: the target's timeout, whatever the library does underneath (a receiver that trickles
    bytes keeps each read within a socket timeout, not the whole answer). A send still running past it is left to
    a daemon thread, and the target gets no new send until those have ended (so no more are left than were sending
    to it at once, one per watch at most), however long the receiver keeps them: its notices wait, retried with
    back-off, and `status` says why. At worst a notice arrives twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._abandoned: dict[str, list[threading.Thread]] = {}

    def __call__(self, target: notify_targets.Target, item: model.Outgoing) -> None:
        with self._lock:
            left = [t for t in self._abandoned.get(target.name, []) if t.is_alive()]
            self._abandoned[target.name] = left
            if left:
                raise errors.NotifyError(f"{target.name}: a send given up after {target.timeout:g}s has not ended yet")
        failure: list[BaseException] = []

        def run() -> None:
            try:
                target.send(item)
            except BaseException as exc:  # carried to the caller's thread
                failure.append(exc)

        sender = threading.Thread(target=run, name=f"{notify_targets.SENDER}{target.name}", daemon=True)
        sender.start()
        sender.join(target.timeout + OVERRUN)
        if sender.is_alive():
            with self._lock:
                self._abandoned.setdefault(target.name, []).append(sender)
            raise errors.NotifyError(f"{target.name}: no answer within {target.timeout:g}s")
        if failure:
            exc = failure[0]
            if isinstance(exc, errors.NotifyError):
                raise exc
            raise errors.NotifyError(f"{target.name}: {type(exc).__name__}") from None


def sent_now(
    targets: Sequence[notify_targets.Target], item_for: Callable[[str], model.Outgoing]
) -> dict[str, str | None]:
    """`reconciler notify test`: send to each target now, concurrently; None for delivered, else why not."""
    results: dict[str, str | None] = {}
    sender = Sender()

    def one(target: notify_targets.Target) -> None:
        try:
            sender(target, item_for(target.name))
            results[target.name] = None
        except errors.NotifyError as exc:
            results[target.name] = str(exc)

    workers = [threading.Thread(target=one, args=(t,), daemon=True) for t in targets]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {t.name: results.get(t.name, f"{t.name}: not sent") for t in targets}

"""What `/readyz` answers for the daemon, from what its jobs and passes report: ready only while the database
answers, this instance holds the lease, no scheduled job is failing, a pass ran within three of the shortest
intervals, and the last check of at least one watch worked. Watches that cannot act (a secret not set) are named in
the answer, once per reason, without making the daemon unready: they are observed and reported as configured.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from reconciler import model


class Readiness:
    def __init__(self, watches: Sequence[model.Watch], clock: Callable[[], datetime]) -> None:
        self._watches = {w.name: w for w in watches}
        self._clock = clock
        self._lock = threading.Lock()
        self._failing: dict[str, str] = {}  # job -> its last unexpected error, until it next succeeds
        self._unchecked: dict[str, str] = {}  # watch -> the error of its last check, while its checks fail
        self._last_pass: datetime | None = None

    def job_failed(self, job: str, error: str) -> None:
        with self._lock:
            self._failing[job] = error

    def job_worked(self, job: str) -> None:
        with self._lock:
            self._failing.pop(job, None)

    def passed(self, report: model.RunReport) -> None:
        with self._lock:
            for outcome in report.outcomes:
                if isinstance(outcome.result, model.CheckFailure):
                    self._unchecked[outcome.watch.name] = outcome.result.message
                else:
                    self._unchecked.pop(outcome.watch.name, None)
            self._last_pass = report.finished_at

    def answer(self, *, database_ok: Callable[[], bool], acting: bool) -> tuple[bool, str]:
        if not database_ok():
            return False, "the database does not answer"
        if not acting:
            return False, "standby: another instance holds the lease"
        with self._lock:
            failing, unchecked, last_pass = dict(self._failing), dict(self._unchecked), self._last_pass
        if failing:
            return False, "; ".join(sorted(failing.values()))
        shortest = min((w.interval for w in self._watches.values()), default=timedelta(minutes=5))
        if last_pass is None or self._clock() - last_pass > 3 * shortest:
            return False, "no pass in the last 3 intervals"
        if self._watches and set(self._watches) <= set(unchecked):
            first = min(unchecked)
            return False, f"the last check of every watch failed; {first}: {unchecked[first]}"
        return True, "; ".join(["ready", *_held_back(self._watches.values())])


def _held_back(watches: Iterable[model.Watch]) -> list[str]:
    """Each reason watches cannot act (a secret not set), once, with the watches it holds back."""
    by_reason: dict[str, list[str]] = {}
    for watch in watches:
        if watch.cannot_act is not None:
            by_reason.setdefault(watch.cannot_act, []).append(watch.name)
    return [
        f"not acting: {why} ({'watch' if len(names) == 1 else 'watches'} {', '.join(names)})"
        for why, names in by_reason.items()
    ]

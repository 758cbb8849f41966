"""How a failed action counts, and when it may be tried again (docs/how-it-works.md):
- a deployment that ran and failed uses up an attempt, and backs off by its attempt number;
- an outage (nothing reached the system) uses up none, and backs off by how many outages came before;
- a refusal a retry cannot fix is not retried until the watch's action changes (or `reconciler retry`);
- when the system said how long to wait (GitHub's rate limits), not sooner than that.
Pure: time is a parameter.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from reconciler import decide, errors, model


def failure_of(exc: errors.ActuatorError) -> model.Failure:
    if isinstance(exc, errors.ActionRefused):
        return model.Failure.REFUSED
    return model.Failure.OUTAGE if isinstance(exc, errors.ActuatorUnavailable) else model.Failure.DEPLOYMENT


def asked_wait(exc: errors.ActuatorError) -> timedelta | None:
    """How long the system asked to wait before the next try, when it said."""
    seconds = getattr(exc, "retry_after", None)
    return timedelta(seconds=seconds) if isinstance(seconds, int | float) else None


def retry_at(
    record: model.ActionRecord, failure: model.Failure, now: datetime, *, wait: timedelta | None = None
) -> datetime | None:
    """When the failed action's target may be tried again; None: not until the watch's action changes."""
    if failure is model.Failure.REFUSED:
        return None
    if failure is model.Failure.OUTAGE:
        at = now + decide.backoff(record.outages + 1)
    else:
        at = now + decide.backoff(record.attempt)
    return max(at, now + wait) if wait is not None else at

"""The scheduler never dies silently: a job that raises something unexpected (a bug) is logged, with its
traceback once, counted in reconciler_internal_errors_total, reported by /readyz until it next succeeds, and keeps
its schedule. The daemon is built in-process around a pass that fails on purpose; nothing is started."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from reconciler import approval_desk, daemon, endpoints, lease, metrics, model
from reconciler.store import leases

WATCH = model.Watch(name="staging", image=model.ImageRef.parse("xchem/x"), selector=model.TagSelector("latest"))


class FlakyPass:
    def __init__(self) -> None:
        self.fail = True

    def __call__(self, names: object) -> model.RunReport:
        if self.fail:
            raise ZeroDivisionError("a bug")
        now = datetime.now(UTC)
        return model.RunReport(now, now, False, ())


def _no_decision(watch: str, digest: str | None, approve: bool, by: str, action: int | None) -> model.ActionRecord:
    raise AssertionError("no approval is asked for here")


@pytest.fixture
def built(migrated_engine: Engine) -> Iterator[tuple[daemon.Daemon, FlakyPass, metrics.Metrics]]:
    holder = lease.Lease(store=leases.Leases(migrated_engine))
    holder.acquire()
    run_pass = FlakyPass()
    counters = metrics.Metrics()
    d = daemon.Daemon(
        watches=[WATCH],
        run_pass=run_pass,
        holder=holder,
        status=dict,
        database_ok=lambda: True,
        counters=counters,
        server=endpoints.Server(host="127.0.0.1", port=0, token=None, webhook_secret=None),
        approvals=approval_desk.Approvals(page=dict, decide=_no_decision, approved=list),
    )
    d._keeper._acting = True  # as after taking the lease; the scheduler is never started here
    yield d, run_pass, counters
    d._http.stop()
    holder.release()


def _internal_errors(counters: metrics.Metrics) -> float:
    for family in text_string_to_metric_families(counters.exposition().decode()):
        if family.name == "reconciler_internal_errors":
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_job_that_raises_is_logged_counted_reported_and_keeps_going(
    built: tuple[daemon.Daemon, FlakyPass, metrics.Metrics], caplog: pytest.LogCaptureFixture
) -> None:
    d, run_pass, counters = built
    with caplog.at_level(logging.ERROR, logger="reconciler.daemon"):
        d._poll("staging")
        d._poll("staging")
    errors_logged = [r for r in caplog.records if "internal error in watch staging" in r.getMessage()]
    assert len(errors_logged) == 2 and [bool(r.exc_info) for r in errors_logged] == [True, False]
    assert _internal_errors(counters) == 2
    ready, why = d._ready()
    assert not ready and why == "internal error in watch staging: ZeroDivisionError"
    run_pass.fail = False
    d._poll("staging")  # the job kept its schedule and now succeeds: /readyz stops reporting it
    assert d._ready() == (True, "ready")

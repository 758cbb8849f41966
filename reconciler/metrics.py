"""Prometheus metrics (prefix `reconciler_`), kept in their own registry and fed from each pass's
`RunReport` and from the registry client's request counts. Never a secret in a label: watch names, action kinds,
results, registry hosts, notification target names (never their URLs) and HTTP methods/codes only.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from reconciler import errors, model

ACTION_BUCKETS = (5, 15, 30, 60, 120, 300, 600, 900, 1800, 2700, 3600, 7200)


class _RegistryRequests(Collector):
    """Reads the registry client's own tallies at scrape time, so nothing is counted twice."""

    def __init__(
        self, requests: Callable[[], Tally[tuple[str, str, int]]], remaining: Callable[[], Mapping[str, int]]
    ) -> None:
        self._requests, self._remaining = requests, remaining

    def collect(self) -> Iterator[Metric]:
        total = CounterMetricFamily(
            "reconciler_registry_requests", "Requests sent to registries", labels=["registry", "method", "code"]
        )
        for (registry, method, code), count in sorted(self._requests().items()):
            total.add_metric([registry, method, str(code)], count)
        yield total
        left = GaugeMetricFamily(
            "reconciler_registry_ratelimit_remaining",
            "Pulls left in the window, from ratelimit-remaining",
            labels=["registry"],
        )
        # A copy: the client adds and drops registries from its worker threads while this reads.
        for registry, value in sorted(dict(self._remaining()).items()):
            left.add_metric([registry], value)
        yield left


class _AwaitingApproval(Collector):
    """1 for each watch whose action waits for a person, 0 for the others that need approval: read from the
    database at scrape time, since an approval given anywhere (the CLI, another instance) changes it."""

    def __init__(self, waiting: Callable[[], Mapping[str, bool]]) -> None:
        self._waiting = waiting

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "reconciler_awaiting_approval", "1 while the watch's action waits for approval", labels=["watch"]
        )
        try:
            waiting = self._waiting()
        except errors.StoreError:  # the database is away: no value rather than a wrong one
            waiting = {}
        for watch, waits in sorted(waiting.items()):
            gauge.add_metric([watch], 1 if waits else 0)
        yield gauge


class Metrics:
    def __init__(
        self,
        *,
        registry_requests: Callable[[], Tally[tuple[str, str, int]]] = Tally,
        ratelimit_remaining: Callable[[], Mapping[str, int]] = dict,
        awaiting_approval: Callable[[], Mapping[str, bool]] = dict,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter("reconciler_polls", "Checks of a watch, by result", ["watch", "result"], registry=r)
        self.poll_duration = Histogram("reconciler_poll_duration_seconds", "Duration of one pass", registry=r)
        self.drift = Counter("reconciler_drift", "Passes that found a watch drifted", ["watch"], registry=r)
        self.actions = Counter(
            "reconciler_actions", "Actions carried out, by result", ["watch", "kind", "result"], registry=r
        )
        self.action_duration = Histogram(
            "reconciler_action_duration_seconds",
            "From launch to outcome",
            ["kind"],
            buckets=ACTION_BUCKETS,
            registry=r,
        )
        self.last_success = Gauge(
            "reconciler_last_success_timestamp_seconds", "Time of the last successful check", ["watch"], registry=r
        )
        self.in_sync = Gauge("reconciler_watch_in_sync", "1 when deployed matches observed", ["watch"], registry=r)
        self.internal_errors = Counter(
            "reconciler_internal_errors",
            "Unexpected errors caught in a scheduled job (a bug: the job keeps its schedule)",
            ["job"],
            registry=r,
        )
        self.notifications = Counter(
            "reconciler_notifications",
            "Notification deliveries, by target, event and result (delivered, failed: retried later, dropped)",
            ["target", "event", "result"],
            registry=r,
        )
        r.register(_RegistryRequests(registry_requests, ratelimit_remaining))
        r.register(_AwaitingApproval(awaiting_approval))

    def record(self, report: model.RunReport) -> None:
        self.poll_duration.observe((report.finished_at - report.started_at).total_seconds())
        for outcome in report.outcomes:
            name = outcome.watch.name
            failed = isinstance(outcome.result, model.CheckFailure)
            self.polls.labels(watch=name, result="error" if failed else "ok").inc()
            if not failed:
                self.last_success.labels(watch=name).set(outcome.result.checked_at.timestamp())
            if outcome.decision.verdict is model.Verdict.DRIFT:
                self.drift.labels(watch=name).inc()
            state = outcome.state
            synced = (
                state.observed is not None
                and state.deployed is not None
                and ((state.observed.tag, state.observed.digest) == (state.deployed.tag, state.deployed.digest))
            )
            self.in_sync.labels(watch=name).set(1 if synced or (outcome.watch.action is None and not failed) else 0)
            action = outcome.action
            if outcome.acted and action is not None and not action.status.open:
                self.actions.labels(watch=name, kind=action.kind.value, result=action.status.value).inc()
                if action.launched_at is not None and action.finished_at is not None:
                    seconds = (action.finished_at - action.launched_at).total_seconds()
                    self.action_duration.labels(kind=action.kind.value).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

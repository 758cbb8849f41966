"""The notification outbox and its courier, on the real databases: recorded per target that wants it, delivered in
order per watch, retried with back-off when a receiver is down, taken over from a process that died, dropped after
a day, and never delaying anything by more than a target's timeout. Time is a fake clock; receivers are real HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import requests
from sqlalchemy import Engine, insert, select, update

from reconciler import errors, model
from reconciler.notify import deliver, targets, timed_send
from reconciler.store import notices, tables
from tests.support.receiver import Receiver

pytest_plugins = ["tests.support.databases"]
SECRET = "notify-secret-7c1e"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Recorder:
    """A target that records what it is sent and fails while `failing` says why."""

    kind = model.NotifyKind.WEBHOOK

    def __init__(self, name: str, timeout: float = 1.0) -> None:
        self.name, self.timeout = name, timeout
        self.sent: list[model.Outgoing] = []
        self.failing: str | None = None
        self._lock = threading.Lock()

    def send(self, item: model.Outgoing) -> None:
        if self.failing:
            raise errors.NotifyError(f"{self.name}: {self.failing}")
        with self._lock:
            self.sent.append(item)


def notice(watch: str, n: int, at: datetime, event: model.Event = model.Event.STARTED) -> model.Notice:
    return model.Notice(event=event, at=at, message=f"{watch} #{n}", watch=watch)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def box(migrated_engine: Engine) -> notices.NoticeBox:
    routes = [
        model.Route(target="chat"),
        model.Route(target="audit", events=frozenset(model.Event), watches=frozenset({"stack-staging"})),
    ]
    return notices.NoticeBox(migrated_engine, routes)


def record(box: notices.NoticeBox, told: list[model.Notice], now: datetime) -> None:
    with box.engine.begin() as conn:
        box.record(conn, told, now)


def rows(engine: Engine) -> list[dict[str, object]]:
    n = tables.notifications
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(n).order_by(n.c.seq))]


def courier(box: notices.NoticeBox, clock: Clock, *chosen: targets.Target, **options: object) -> deliver.Courier:
    return deliver.Courier(box=box, targets={t.name: t for t in chosen}, clock=clock, **options)  # type: ignore[arg-type]


def test_a_notice_is_recorded_once_per_target_that_wants_it_with_one_id(
    box: notices.NoticeBox, clock: Clock, migrated_engine: Engine
) -> None:
    record(
        box,
        [
            notice("stack-staging", 1, clock.now),
            notice("stack-production", 1, clock.now),
            notice("stack-staging", 2, clock.now, model.Event.DRIFT),  # only "audit" opted in to drift
        ],
        clock.now,
    )
    stored = rows(migrated_engine)
    assert [(r["target"], r["watch"], r["event"]) for r in stored] == [
        ("chat", "stack-staging", "started"),
        ("audit", "stack-staging", "started"),
        ("chat", "stack-production", "started"),
        ("audit", "stack-staging", "drift"),
    ]
    assert stored[0]["id"] == stored[1]["id"] != stored[2]["id"]
    assert all(r["status"] == "pending" and r["body"] for r in stored)


def test_everything_is_delivered_in_order_per_watch(box: notices.NoticeBox, clock: Clock) -> None:
    chat = Recorder("chat")
    told = [notice(w, n, clock.now) for n in range(5) for w in ("stack-staging", "stack-production")]
    record(box, told, clock.now)
    assert courier(box, clock, chat).drain(10)
    for watch in ("stack-staging", "stack-production"):
        assert [i.notice["message"] for i in chat.sent if i.watch == watch] == [f"{watch} #{n}" for n in range(5)]
    assert box.backlog(["chat"])["chat"].undelivered == 0


def test_a_failure_holds_back_its_watch_only_then_is_retried_after_its_back_off(
    box: notices.NoticeBox, clock: Clock
) -> None:
    chat = Recorder("chat")
    record(box, [notice("stack-staging", 1, clock.now), notice("stack-staging", 2, clock.now)], clock.now)
    chat.failing = "HTTP 503 from https://chat.example.org/hook"
    counted: Counter[tuple[str, str, str]] = Counter()
    c = courier(box, clock, chat, counted=lambda *key: counted.update([key]))
    assert c.drain(10)
    assert chat.sent == [] and counted == {("chat", "started", "failed"): 1}  # #2 waited behind #1
    backlog = box.backlog(["chat"])["chat"]
    assert backlog.undelivered == 2 and backlog.last_error == "HTTP 503 from https://chat.example.org/hook"
    assert backlog.next_attempt_at == clock.now + timedelta(seconds=5)

    chat.failing = None
    record(box, [notice("stack-production", 1, clock.now)], clock.now)
    assert c.drain(10)
    assert [i.notice["message"] for i in chat.sent] == ["stack-production #1"]  # not held back by staging
    clock.advance(seconds=5)
    assert c.drain(10)
    assert [i.notice["message"] for i in chat.sent][1:] == ["stack-staging #1", "stack-staging #2"]
    assert counted[("chat", "started", "delivered")] == 3


def test_back_off_doubles_up_to_five_minutes() -> None:
    assert [deliver.backoff(n).total_seconds() for n in (1, 2, 3, 4, 7, 50)] == [5, 10, 20, 40, 300, 300]


def test_a_claim_left_by_a_process_that_died_is_taken_over_when_it_expires(
    box: notices.NoticeBox, clock: Clock, migrated_engine: Engine
) -> None:
    """Claims are timed by the database's clock (as the lease is), so a process whose clock runs ahead takes
    nothing over early: here the process clock is a day ahead, and the claim still holds until it expires."""
    chat = Recorder("chat")
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    [dead] = box.claim(clock.now, targets=["chat"], hold=lambda _: timedelta(minutes=10))
    c = courier(box, clock, chat)
    clock.advance(hours=23)
    assert c.drain(10)
    assert chat.sent == []  # another process may be sending it
    with migrated_engine.begin() as conn:  # ten minutes later, by the database's clock
        conn.execute(update(tables.notifications).values(claimed_until=datetime(2000, 1, 1, tzinfo=UTC)))
    assert c.drain(10)
    assert [i.id for i in chat.sent] == [dead.id]  # sent again, with the same id


def test_one_targets_long_backlog_never_hides_another_targets_notices(box: notices.NoticeBox, clock: Clock) -> None:
    chat, audit = Recorder("chat"), Recorder("audit")
    chat.failing = "HTTP 503"
    record(box, [notice("stack-production", n, clock.now) for n in range(2500)], clock.now)  # for "chat" only
    c = courier(box, clock, chat, audit)
    c.drain(30)
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    assert c.drain(10)
    assert [i.notice["message"] for i in audit.sent] == ["stack-staging #1"]


def test_a_notice_retried_for_a_day_is_dropped_with_a_warning_and_counted(
    box: notices.NoticeBox, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    chat = Recorder("chat")
    record(box, [notice("stack-staging", 1, clock.now), notice("stack-staging", 2, clock.now)], clock.now)
    chat.failing = "cannot connect to https://chat.example.org/hook"
    counted: Counter[tuple[str, str, str]] = Counter()
    c = courier(box, clock, chat, counted=lambda *key: counted.update([key]))
    assert c.drain(10)
    clock.advance(hours=24)
    with caplog.at_level(logging.WARNING, logger="reconciler.notify.deliver"):
        assert c.drain(10)
    assert counted[("chat", "started", "dropped")] == 2
    assert box.backlog(["chat"])["chat"].undelivered == 0 and box.backlog(["chat"])["chat"].dropped == 2
    assert sum("dropped: not delivered in 24h" in r.getMessage() for r in caplog.records) == 2
    chat.failing = None
    record(box, [notice("stack-staging", 3, clock.now)], clock.now)
    assert c.drain(10)
    assert [i.notice["message"] for i in chat.sent] == ["stack-staging #3"]


def test_a_target_that_cannot_send_keeps_its_notices_for_a_day(
    box: notices.NoticeBox, clock: Clock, migrated_engine: Engine
) -> None:
    """A target whose secret is not set has no sender: its rows wait (shown by `status`), then are dropped."""
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    c = courier(box, clock, Recorder("chat"))  # "audit" is not among the senders
    assert c.drain(10)
    assert box.backlog(["audit"])["audit"].undelivered == 1
    clock.advance(hours=25)
    c.round()
    assert box.backlog(["audit"])["audit"].dropped == 1


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


def webhook(receiver: Receiver, *, timeout: float = 2.0, name: str = "audit") -> targets.WebhookTarget:
    return targets.WebhookTarget(
        name=name,
        url=f"{receiver.url}/hook",
        secret=SECRET,
        session=requests.Session(),
        timeout=timeout,
        shown="$AUDIT_URL",
    )


def test_a_receiver_down_then_back_gets_everything_in_order_per_watch(
    migrated_engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    box = notices.NoticeBox(migrated_engine, [model.Route(target="audit", events=frozenset(model.Event))])
    c = courier(box, clock, webhook(receiver))
    receiver.down()
    watches = ("stack-staging", "stack-production", "frontend")
    for n in range(4):
        record(box, [notice(w, n, clock.now) for w in watches], clock.now)
        c.drain(10)
        clock.advance(seconds=1)
    assert receiver.received == []
    assert box.backlog(["audit"])["audit"].undelivered == 12
    receiver.up()
    clock.advance(minutes=10)
    assert c.drain(10)
    got = receiver.wait_for(12)
    for w in watches:
        assert [r.json()["message"] for r in got if r.json()["watch"] == w] == [f"{w} #{n}" for n in range(4)]
    assert len({r.headers["X-Reconciler-Delivery"] for r in got}) == 12
    assert box.backlog(["audit"])["audit"].undelivered == 0


def test_a_hanging_receiver_holds_back_nothing_longer_than_its_timeout(
    migrated_engine: Engine, clock: Clock, receiver: Receiver
) -> None:
    box = notices.NoticeBox(migrated_engine, [model.Route(target="slow"), model.Route(target="fast")])
    with Receiver() as fast_receiver:
        slow, fast = webhook(receiver, timeout=0.5, name="slow"), webhook(fast_receiver, name="fast")
        c = courier(box, clock, slow, fast)
        receiver.hang()
        record(box, [notice("stack-staging", 1, clock.now)], clock.now)
        started = time.monotonic()
        done = c.drain(slow.timeout)
        waited = time.monotonic() - started
        assert fast_receiver.wait_for(1)[0].json()["message"] == "stack-staging #1"
    assert not done  # the hanging one was left to its courier thread (or the next process)
    assert waited < slow.timeout + 0.5
    receiver.release()


def test_with_no_target_able_to_send_the_courier_still_drops_what_expired(box: notices.NoticeBox, clock: Clock) -> None:
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    c = courier(box, clock)  # every target's secret unset: nothing to send with
    clock.advance(hours=24, seconds=1)
    c.stop(1.0)
    assert box.backlog(["chat", "audit"])["chat"].dropped == 1


def test_a_stop_request_ends_the_drain_at_once_and_starts_no_send(box: notices.NoticeBox, clock: Clock) -> None:
    chat = Recorder("chat", timeout=30)
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    halt = threading.Event()
    c = courier(box, clock, chat, halt=halt)
    halt.set()  # SIGTERM while the one-shot drains
    started = time.monotonic()
    c.stop(chat.timeout)
    assert time.monotonic() - started < 1.0
    assert chat.sent == [] and box.backlog(["chat"])["chat"].undelivered == 1  # for the next process


class Stuck:
    """A target whose sends block until `unblock` is set, counting the sends started."""

    kind = model.NotifyKind.WEBHOOK

    def __init__(self) -> None:
        self.name, self.timeout = "stuck", 0.2
        self.unblock = threading.Event()
        self.started = 0

    def send(self, item: model.Outgoing) -> None:
        self.started += 1
        self.unblock.wait(30)


def test_a_send_past_its_timeout_is_abandoned_once_and_the_target_gets_no_other_meanwhile(clock: Clock) -> None:
    """A receiver that trickles bytes keeps a send alive past the timeout: one thread is left to it, no more."""
    stuck, sender = Stuck(), timed_send.Sender()
    item = model.Outgoing(seq=1, id="n-1", target="stuck", event="started", watch="w", body="{}", created_at=clock.now)
    with pytest.raises(errors.NotifyError, match="no answer within 0.2s"):
        sender(stuck, item)
    for _ in range(3):
        with pytest.raises(errors.NotifyError, match="has not ended yet"):
            sender(stuck, item)
    assert stuck.started == 1
    stuck.unblock.set()
    for thread in threading.enumerate():
        if thread.name == "notify-stuck":
            thread.join(10)
    sender(stuck, item)  # the abandoned send has ended: sends go on
    assert stuck.started == 2


def test_a_row_of_an_unknown_event_is_delivered_and_a_buggy_target_stops_nothing(
    box: notices.NoticeBox, clock: Clock, migrated_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """A newer version may record an event this one does not know; a target's bug must not end delivery."""
    with migrated_engine.begin() as conn:
        conn.execute(
            insert(tables.notifications).values(
                id="future-1",
                target="chat",
                event="future_event",
                watch="w",
                body='{"message": "m"}',
                status="pending",
                created_at=clock.now,
            )
        )
    chat = Recorder("chat")
    broken = Recorder("audit")
    broken.send = lambda item: 1 / 0  # type: ignore[method-assign,assignment]
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    c = courier(box, clock, chat, broken)
    with caplog.at_level(logging.ERROR, logger="reconciler.notify.deliver"):
        assert c.drain(10)
    assert sorted(i.event for i in chat.sent) == ["future_event", "started"]
    assert box.backlog(["audit"])["audit"].last_error == "ZeroDivisionError"


def test_an_expired_row_is_dropped_once_and_never_while_claimed(box: notices.NoticeBox, clock: Clock) -> None:
    record(box, [notice("stack-staging", 1, clock.now), notice("stack-production", 1, clock.now)], clock.now)
    [held, *_] = box.claim(clock.now, targets=["chat"], hold=lambda _: timedelta(minutes=10))
    later = clock.now + timedelta(days=2)
    dropped = box.expired(later - timedelta(days=1), later)
    assert [i.seq for i in dropped] != [] and held.seq not in [i.seq for i in dropped]
    assert box.expired(later - timedelta(days=1), later) == []  # a second sweep finds none of them again


def test_due_in_times_a_back_off_by_the_process_and_a_claim_by_the_database(
    box: notices.NoticeBox, clock: Clock
) -> None:
    """So a process whose clock runs ahead neither spins on a claim still held nor waits past a back-off."""
    record(box, [notice("stack-staging", 1, clock.now), notice("stack-production", 1, clock.now)], clock.now)
    staging, production = box.claim(clock.now, targets=["chat"], hold=lambda _: timedelta(minutes=10))
    box.retry(production, "HTTP 503", clock.now + timedelta(seconds=40))  # which ends its claim
    assert box.due_in(["chat"], clock.now) == timedelta(seconds=40)
    box.retry(production, "HTTP 503", clock.now + timedelta(days=2))
    clock.advance(days=1)  # this process's clock is now a day ahead of the database's
    due = box.due_in(["chat"], clock.now)
    assert due is not None and timedelta(minutes=9) < due <= timedelta(minutes=10)  # staging's claim, still held
    assert staging.watch == "stack-staging"


def test_a_drain_waiting_on_a_slow_send_does_not_keep_asking_the_database(
    migrated_engine: Engine, clock: Clock
) -> None:
    rounds = Counter[str]()

    class Counting(notices.NoticeBox):
        def expired(self, before: datetime, now: datetime) -> list[model.Outgoing]:
            rounds["rounds"] += 1
            return super().expired(before, now)

    box = Counting(migrated_engine, [model.Route(target="stuck")])
    stuck = Stuck()
    stuck.timeout = 1.0
    record(box, [notice("stack-staging", 1, clock.now)], clock.now)
    assert not courier(box, clock, stuck).drain(1.0)
    assert rounds["rounds"] <= 2  # looked again when woken, not ten times a second
    stuck.unblock.set()

"""The notification targets against a real HTTP receiver on loopback: real Apprise (json://, form://) and the signed
webhook, delivered and failing (an error status, nobody listening, no answer, a redirect), and never a secret in
what they say."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime

import pytest
import requests

from reconciler import errors, model
from reconciler.notify import apprise_target
from reconciler.notify.targets import AppriseTarget, Target, WebhookTarget, check_apprise_url
from tests.support.receiver import Receiver

TOKEN = "T0KEN-abcdef"
SECRET = "hunter2-webhook-key"


def outgoing(
    event: model.Event = model.Event.FAILED, *, watch: str | None = "web", message: str = ""
) -> model.Outgoing:
    notice = model.Notice(
        event=event,
        at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
        message=message or f"web: {event.value} — déploiement",  # not ASCII: the body is sent as UTF-8
        watch=watch,
        image="ghcr.io/acme/web",
        tag="1.2.3",
        digest="sha256:" + "a" * 64,
        action={"id": 7, "kind": "awx", "status": "failed", "attempt": 2, "link": "https://awx.example.org/#/jobs/7"},
    )
    return model.Outgoing(
        seq=1,
        id="id-1",
        target="t",
        event=event,
        watch=watch,
        body=notice.body("id-1"),
        created_at=datetime(2025, 3, 4, tzinfo=UTC),
    )


def failure(target: Target, item: model.Outgoing | None = None) -> str:
    with pytest.raises(errors.NotifyError) as caught:
        target.send(item or outgoing())
    return str(caught.value)


# --- Apprise ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "kind"),
    [
        (model.Event.FAILED, "failure"),
        (model.Event.GAVE_UP, "failure"),
        (model.Event.CHECK_FAILING, "failure"),
        (model.Event.SUCCEEDED, "success"),
        (model.Event.RECOVERED, "success"),
        (model.Event.AWAITING_APPROVAL, "warning"),
        (model.Event.DRIFT, "info"),
        (model.Event.STARTED, "info"),
    ],
)
def test_apprise_json_gets_the_title_message_and_type(event: model.Event, kind: str) -> None:
    with Receiver() as r:
        target = AppriseTarget(name="hook", url=f"json://127.0.0.1:{r.port}/hook/{TOKEN}", timeout=5)
        target.send(outgoing(event))
        [got] = r.wait_for(1)
    assert (got.method, got.path) == ("POST", f"/hook/{TOKEN}")
    document = got.json()
    assert document["title"] == f"{event.value}: web"
    assert document["message"] == f"web: {event.value} — déploiement"
    assert document["type"] == kind
    assert (target.name, target.kind, target.timeout) == ("hook", model.NotifyKind.APPRISE, 5)


def test_apprise_form_gets_fields_and_a_notice_without_watch_is_titled_reconciler() -> None:
    with Receiver() as r:
        AppriseTarget(name="form", url=f"form://127.0.0.1:{r.port}/in", timeout=5).send(
            outgoing(model.Event.TEST, watch=None, message="a test from reconciler")
        )
        [got] = r.wait_for(1)
    fields = got.form()
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert (fields["title"], fields["message"], fields["type"]) == (
        "test: reconciler",
        "a test from reconciler",
        "info",
    )


def test_apprise_error_status_is_a_notify_error_with_the_reason_and_without_the_url() -> None:
    with Receiver() as r:
        r.status = 500
        url = f"json://127.0.0.1:{r.port}/hook/{TOKEN}?key=s3cretvalue"
        said = failure(AppriseTarget(name="slack-staging", url=url, timeout=5))
        assert len(r.received) == 1
    assert said.startswith("slack-staging: ")
    assert "500" in said
    for secret in (url, TOKEN, "s3cretvalue", "/hook/"):
        assert secret not in said
    assert "\n" not in said


def test_apprise_receiver_down_is_a_notify_error() -> None:
    with Receiver() as r:
        target = AppriseTarget(name="hook", url=f"json://127.0.0.1:{r.port}/hook/{TOKEN}", timeout=5)
        r.down()
        said = failure(target)
        r.up()
        target.send(outgoing())  # the same target works again once the receiver is back
        r.wait_for(1)
    assert said.startswith("hook: ") and "connection" in said.lower()
    assert TOKEN not in said


def test_apprise_hanging_receiver_fails_within_about_the_timeout() -> None:
    with Receiver() as r:
        r.hang()
        target = AppriseTarget(name="hook", url=f"json://127.0.0.1:{r.port}/hook/{TOKEN}", timeout=0.5)
        started = time.monotonic()
        said = failure(target)
        elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed
    assert said.startswith("hook: ") and TOKEN not in said


def test_apprise_url_apprise_cannot_build_names_only_the_scheme() -> None:
    said = failure(AppriseTarget(name="chat", url=f"slack://{TOKEN}", timeout=5))
    assert said == "chat: Apprise cannot build a notifier from its URL (scheme 'slack')"
    said = failure(AppriseTarget(name="chat", url=f"nosuch://{TOKEN}@example.org", timeout=5))
    assert said == "chat: Apprise cannot build a notifier from its URL (scheme 'nosuch')"


def test_apprise_reason_is_taken_from_this_thread_only() -> None:
    outcome: list[str] = []

    def send() -> None:
        outcome.append(failure(AppriseTarget(name="hook", url=f"json://127.0.0.1:{r.port}/{TOKEN}", timeout=5)))

    with Receiver() as r:
        r.hang()
        sender = threading.Thread(target=send)
        sender.start()
        r.wait_for(1)  # the send is under way: what another thread logs now must not become its reason
        logging.getLogger("apprise").error("another thread's trouble")
        r.status = 503
        r.release()
        sender.join(timeout=10)
    [said] = outcome
    assert "503" in said and "another thread" not in said


APPRISE_LOGS = """
import logging, sys
from datetime import UTC, datetime
seen = []
class Seen(logging.Handler):
    def emit(self, record):
        seen.append(record.name)
logging.basicConfig(level=logging.DEBUG, handlers=[Seen()])
from reconciler import errors, model
from reconciler.notify.targets import AppriseTarget, check_apprise_url
check_apprise_url("nosuch://T0KEN-abcdef")
check_apprise_url("json://")
body = model.Notice(event=model.Event.TEST, at=datetime.now(UTC), message="hi").body("id-1")
item = model.Outgoing(1, "id-1", "x", model.Event.TEST, None, body, datetime.now(UTC))
try:
    AppriseTarget(name="x", url=f"json://127.0.0.1:{sys.argv[1]}/T0KEN-abcdef", timeout=2).send(item)
except errors.NotifyError as exc:
    print(exc)
print(sorted({name for name in seen if name.startswith("apprise")}))
"""


def test_apprise_logs_nothing_to_the_root_logger_not_even_while_it_loads() -> None:
    # in a fresh interpreter: pytest hangs its own capture on every logger, and Apprise logs while it is imported
    with Receiver() as r:
        r.down()
        done = subprocess.run(
            [sys.executable, "-c", APPRISE_LOGS, str(r.port)], capture_output=True, text=True, timeout=60, check=True
        )
    said, names = done.stdout.splitlines()
    assert said.startswith("x: ") and TOKEN not in said
    assert names == "[]", done.stdout
    assert done.stderr == ""


def test_redact_hides_the_url_and_every_token_looking_piece() -> None:
    url = "slack://xoxb-user:pa55word@TA1B2C3/BQ9R8S7/abcdefghij/#alerts?footer=yes&token=zz-top-secret"
    text = f"failed for {url}; user xoxb-user pass pa55word TA1B2C3 BQ9R8S7 abcdefghij zz-top-secret #alerts on"
    said = apprise_target.redact(text, url)
    for secret in ("xoxb-user", "pa55word", "TA1B2C3", "BQ9R8S7", "abcdefghij", "zz-top-secret", "alerts"):
        assert secret not in said
    assert said.startswith("failed for ***") and said.endswith(" on")
    # a DNS name or an IP address is not a token, and stays
    assert apprise_target.redact("to hooks.example.org", "json://hooks.example.org/x") == "to hooks.example.org"
    assert apprise_target.redact("sent to 10.1.2.3", "json://10.1.2.3:8080/x") == "sent to 10.1.2.3"
    # the bot token of tgram://<bot id>:<key>/ sits where a host would
    assert "AAHsecretkey" not in apprise_target.redact("bad AAHsecretkey", "tgram://123456789:AAHsecretkey/42")


def test_redact_hides_apprises_own_masked_form_of_the_url() -> None:
    # Apprise's pprint mask keeps a secret's first and last characters: rocket://***:P...X@***
    said = check_apprise_url("rocket://user:PASSWORDX@hostname") or ""
    assert said.startswith("Apprise cannot build a rocket:// notifier from this URL")
    assert not re.search(r"P\.+X", said) and "PASSWORDX" not in said and "user:" not in said
    # whatever URL it is, and keeping the punctuation after it
    assert apprise_target.redact("see rocket://***:P...X@***.", "json://elsewhere/x") == "see ***."


def test_redact_leaves_a_reason_without_a_url_as_it_is() -> None:
    reason = "Failed to send JSON POST notification: Internal Server Error - Unknown Error, error=500."
    assert apprise_target.redact(reason, "json://127.0.0.1:9/hook") == reason


def test_check_apprise_url() -> None:
    assert check_apprise_url("json://127.0.0.1:9/hook") is None
    assert check_apprise_url("slack://TA1B2C3D4/BQ9R8S7T6/abcdefghijklmnopqrstuvwx/#alerts") is None
    assert check_apprise_url(f"nosuch://{TOKEN}") == "not an Apprise URL that Apprise knows (scheme 'nosuch')"
    assert (check_apprise_url(f"https://example.org/{TOKEN}") or "").startswith("not a URL Apprise knows")
    # a Slack webhook's own URL is one Apprise takes (its plugin's parse_native_url)
    assert check_apprise_url("https://hooks.slack.com/services/TA1B2C3D4/BQ9R8S7T6/abcdefghijklmnopqrstuvwx") is None
    assert "does not start with a scheme" in (check_apprise_url(f"just {TOKEN}") or "")
    said = check_apprise_url(f"slack://{TOKEN}") or ""
    assert said.startswith("Apprise cannot build a slack:// notifier from this URL") and TOKEN not in said


def test_importing_the_targets_does_not_import_apprise() -> None:
    code = "import sys, reconciler.notify.targets; print('apprise' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


# --- the webhook ---------------------------------------------------------------------------------------------


def webhook(r: Receiver, *, timeout: float = 5, path: str = "/reconciler", shown: str | None = None) -> WebhookTarget:
    url = r.url + path
    return WebhookTarget(
        name="audit", url=url, secret=SECRET, session=requests.Session(), timeout=timeout, shown=shown or url
    )


def test_webhook_posts_the_body_as_recorded_signed_with_the_secret() -> None:
    item = outgoing(model.Event.GAVE_UP)
    with Receiver() as r:
        target = webhook(r)
        target.send(item)
        [got] = r.wait_for(1)
    assert (got.method, got.path) == ("POST", "/reconciler")
    assert got.body == item.body.encode("utf-8")
    expected = "sha256=" + hmac.new(SECRET.encode(), got.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(got.headers["X-Reconciler-Signature-256"], expected)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-reconciler-event"] == "gave_up"
    assert got.headers["x-reconciler-delivery"] == "id-1"
    assert got.headers["user-agent"] == "reconciler/0.2"
    assert got.json()["id"] == "id-1" and got.json()["event"] == "gave_up"
    assert (target.name, target.kind, target.timeout) == ("audit", model.NotifyKind.WEBHOOK, 5)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_webhook_any_2xx_is_delivered(status: int) -> None:
    with Receiver() as r:
        r.status = status
        webhook(r).send(outgoing())
        r.wait_for(1)


@pytest.mark.parametrize("status", [500, 503, 404, 401, 302, 301])
def test_webhook_other_statuses_fail_naming_the_status_and_redirects_are_not_followed(status: int) -> None:
    with Receiver() as r:
        r.status = status
        said = failure(webhook(r))
        assert [got.path for got in r.received] == ["/reconciler"]  # a 3xx's Location is not followed
        assert said == f"audit: HTTP {status} from {r.url}/reconciler"


def test_webhook_receiver_down_and_back() -> None:
    with Receiver() as r:
        target = webhook(r)
        target.send(outgoing())
        r.down()
        said = failure(target)  # the same session: its pooled connection must not hide the outage
        assert said == f"audit: cannot connect to {r.url}/reconciler"
        r.up()
        target.send(outgoing())
        r.wait_for(2)


def test_webhook_hanging_receiver_fails_within_about_the_timeout() -> None:
    with Receiver() as r:
        r.hang()
        target = webhook(r, timeout=0.5)
        started = time.monotonic()
        said = failure(target)
        elapsed = time.monotonic() - started
        assert said == f"audit: no answer within 0.5s from {r.url}/reconciler"
    assert elapsed < 3, elapsed


def test_webhook_dropped_connection_is_told_apart_from_a_refused_one() -> None:
    outcome: list[str] = []
    with Receiver() as r:
        r.hang()
        target = webhook(r)
        sender = threading.Thread(target=lambda: outcome.append(failure(target)))
        sender.start()
        r.wait_for(1)
        r.down()  # drops the held request unanswered
        sender.join(timeout=10)
        assert outcome == [f"audit: the connection to {r.url}/reconciler closed without an answer"]


def test_webhook_errors_never_name_the_secret_url_or_the_signature() -> None:
    item = outgoing()
    with Receiver() as r:
        target = webhook(r, path="/hooks/s3cr3t-path-token", shown="$AUDIT_URL")
        r.status = 503
        said_status = failure(target, item)
        r.hang()
        said_hang = WebhookTarget(
            name="audit",
            url=r.url + "/hooks/s3cr3t-path-token",
            secret=SECRET,
            session=requests.Session(),
            timeout=0.2,
            shown="$AUDIT_URL",
        )
        said_timeout = failure(said_hang, item)
        r.down()
        said_down = failure(target, item)
        signature = r.received[0].headers["x-reconciler-signature-256"]
    assert said_status == "audit: HTTP 503 from $AUDIT_URL"
    assert said_timeout == "audit: no answer within 0.2s from $AUDIT_URL"
    assert said_down == "audit: cannot connect to $AUDIT_URL"
    for said in (said_status, said_timeout, said_down, repr(target)):
        for secret in ("s3cr3t-path-token", "127.0.0.1", SECRET, signature, signature.removeprefix("sha256=")):
            assert secret not in said


# --- the receiver itself ---------------------------------------------------------------------------------------


def test_receiver_holds_until_release_and_wait_for_names_what_arrived() -> None:
    answers: list[int] = []
    with Receiver() as r:
        r.hang()
        r.status = 202
        session = requests.Session()
        client = threading.Thread(target=lambda: answers.append(session.get(r.url + "/a?b=c", timeout=10).status_code))
        client.start()
        [got] = r.wait_for(1)
        assert answers == []  # held
        r.release()
        client.join(timeout=10)
        assert answers == [202]
        assert (got.method, got.path, got.body, "HOST" in got.headers) == ("GET", "/a?b=c", b"", True)
        with pytest.raises(AssertionError, match=r"expected 2 request\(s\) within 0.1s, got 1: \['GET /a\?b=c'\]"):
            r.wait_for(2, timeout=0.1)

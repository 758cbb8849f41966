"""The notification targets: where one `[[notify]]` entry sends a notice, and how it says it could not.

A target's `send` delivers one outbox item or raises `NotifyError("<target>: <why>")`, one line, which names the
target and never its secret (an Apprise URL embeds tokens; a webhook's URL may come from a secret, and its HMAC key
is one). The courier keeps the item and tries again later; nothing here retries.

- `WebhookTarget`: our own JSON (`Notice.body`), POSTed as recorded and signed the way GitHub signs its webhooks.
- `AppriseTarget` (in `apprise_target`, re-exported here): Slack, Teams, e-mail, … through an Apprise URL. Apprise
  is imported only when such a target is used or checked, as it takes a tenth of a second to import.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Protocol

import requests

from reconciler import errors, model
from reconciler.notify.apprise_target import AppriseTarget, check_apprise_url

__all__ = ["USER_AGENT", "AppriseTarget", "Target", "WebhookTarget", "check_apprise_url", "sign"]

USER_AGENT = "reconciler/0.2"
SIGNATURE_HEADER = "X-Reconciler-Signature-256"
SENDER = "notify-"  # how the threads that send notifications are named


class _NotFromSenders(logging.Filter):
    """urllib3 logs each request's path at DEBUG, and a notification URL's path holds its tokens (a Slack webhook's
    does): `--log-level debug` must not show them, so what urllib3 logs from a sending thread is dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.threadName or "").startswith(SENDER)


for _name in ("urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry", "urllib3.response"):
    logging.getLogger(_name).addFilter(_NotFromSenders())


class Target(Protocol):
    name: str  # the [[notify]] name, e.g. "slack-staging"
    kind: model.NotifyKind
    timeout: float  # seconds: the most one send may take

    def send(self, item: model.Outgoing) -> None:
        """Deliver `item`, or raise `errors.NotifyError("<name>: <one line why>")`."""
        ...


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: `sha256=` and the hex HMAC-SHA256 of the raw body, keyed with the secret.

    GitHub's convention (X-Hub-Signature-256), so receivers can reuse their checks: "Validating webhook
    deliveries", https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries. The receiver
    recomputes it over the bytes it received and compares in constant time (`hmac.compare_digest`).
    """
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class WebhookTarget:
    """POSTs the notice's JSON as recorded (so a redelivery is byte-identical), signed with the shared secret.

    Any 2xx is a delivery. Redirects are not followed: a 3xx is a failure naming its status, as following one would
    send the signed notice somewhere nobody configured. `shown` is how errors name the URL: the URL itself when the
    config file holds it, else where it came from (e.g. "$AUDIT_URL").
    """

    kind = model.NotifyKind.WEBHOOK

    def __init__(
        self, *, name: str, url: str, secret: str, session: requests.Session, timeout: float, shown: str
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._url = url
        self._secret = secret
        self._session = session
        self._shown = shown

    def __repr__(self) -> str:
        return f"WebhookTarget(name={self.name!r}, url={self._shown!r})"

    def send(self, item: model.Outgoing) -> None:
        body = item.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Reconciler-Event": item.event,
            "X-Reconciler-Delivery": item.id,
            SIGNATURE_HEADER: sign(self._secret, body),
        }
        try:
            response = self._session.post(
                self._url,
                data=body,
                headers=headers,
                timeout=(self.timeout, self.timeout),
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            # The exception's text names the real URL, so only its kind is told (and not chained into a traceback)
            raise errors.NotifyError(f"{self.name}: {self._failure(exc)}") from None
        with response:
            if not 200 <= response.status_code < 300:
                raise errors.NotifyError(f"{self.name}: HTTP {response.status_code} from {self._shown}")

    def _failure(self, exc: requests.RequestException) -> str:
        if isinstance(exc, requests.Timeout):  # before ConnectionError: a ConnectTimeout is both
            return f"no answer within {self.timeout:g}s from {self._shown}"
        if isinstance(exc, requests.exceptions.SSLError):
            return f"TLS failed with {self._shown}"
        if isinstance(exc, requests.ConnectionError):
            # requests wraps urllib3's MaxRetryError, whose `reason` is a NewConnectionError (refused, no such host)
            # when nothing was reached; otherwise the connection was made and then dropped (a ProtocolError)
            reason = getattr(exc.args[0] if exc.args else None, "reason", None)
            if any(kind.__name__ == "NewConnectionError" for kind in type(reason).__mro__):
                return f"cannot connect to {self._shown}"
            return f"the connection to {self._shown} closed without an answer"
        return f"cannot send to {self._shown} ({type(exc).__name__})"

"""The Apprise target: one Apprise URL (Slack, Teams, Discord, e-mail, json://, form://, …) per `[[notify]]`.

Apprise is imported inside the functions only: a config without Apprise targets never loads it (a tenth of a
second, and more when its plugins load on first use).

Apprise says why a send failed only through its logger ("apprise"), and its messages may name hosts, tokens or the
whole URL ("Unparseable URL foo://…" echoes it). So that logger is cut off from the root logger, a send captures the
WARNING and ERROR records logged from its own thread (another thread's send logs to the same logger at the same
time), and what it reports is redacted: the URL, its userinfo, and every piece of it of 4 or more characters that
could be a token (path segments, query values, a host that is not a DNS name) become `***`, and then so does
anything left that looks like a URL: Apprise's own masked form of one (`rocket://***:P...X@***`) keeps a
password's first and last characters.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qsl, unquote

from reconciler import errors, model

LOGGER = "apprise"
_MINIMUM_SECRET = 4  # shorter pieces ("json", "T1") are too common in ordinary words to be worth hiding
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,31})://")
_DNS_NAME = re.compile(r"(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,63}|\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9A-Fa-f:.]+\]")
_REASON_LENGTH = 300
# Any URL-looking run, less the punctuation that ends a sentence or closes a bracket around it
_URL_RUN = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+?(?=[.,;:!?)\]}>'\"]*(?:\s|$))")

# NotifyType's attribute names: an enum in Apprise 2, a class of strings in 1.9; both have these names
_NOTIFY_TYPE: dict[str, str] = {
    model.Event.FAILED: "FAILURE",
    model.Event.GAVE_UP: "FAILURE",
    model.Event.CHECK_FAILING: "FAILURE",
    model.Event.SUCCEEDED: "SUCCESS",
    model.Event.RECOVERED: "SUCCESS",
    model.Event.AWAITING_APPROVAL: "WARNING",
}


class AppriseTarget:
    """Sends a notice's message, titled "<event>: <watch>", through the plugin Apprise builds from the URL."""

    kind = model.NotifyKind.APPRISE

    def __init__(self, *, name: str, url: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        self._url = url  # a secret: Apprise URLs embed tokens and passwords

    def __repr__(self) -> str:
        return f"AppriseTarget(name={self.name!r}, scheme={_scheme(self._url)!r})"

    def send(self, item: model.Outgoing) -> None:
        _quiet_logger()  # before the import: Apprise logs while it loads
        import apprise  # noqa: PLC0415  (lazily: see the module's docstring)

        notice = item.notice
        event = str(notice.get("event") or item.event)
        title = f"{event}: {notice.get('watch') or 'reconciler'}"
        notify_type = getattr(apprise.NotifyType, _NOTIFY_TYPE.get(item.event, "INFO"))
        with _captured() as said:
            try:
                # A plugin per send: plugins keep state (throttling, a delivered-piece memo in Apprise 2), and
                # sends run on several threads
                plugin = apprise.Apprise.instantiate(self._url)
                if plugin is None:
                    raise errors.NotifyError(
                        f"{self.name}: Apprise cannot build a notifier from its URL (scheme {_scheme(self._url)!r})"
                    )
                # Apprise's URLBase (apprise/url.py) keeps requests' (connect, read) timeout in these two
                # attributes, 4 s each by default, and its HTTP plugins pass `request_timeout` built from them
                plugin.socket_connect_timeout = self.timeout
                plugin.socket_read_timeout = self.timeout
                delivered = plugin.notify(body=str(notice.get("message") or ""), title=title, notify_type=notify_type)
            except errors.NotifyError:
                raise
            except Exception as exc:  # Apprise's plugins are many; none may take the courier down
                # Not chained: the original's text and traceback may hold the URL
                raise errors.NotifyError(
                    f"{self.name}: Apprise failed: {type(exc).__name__}: {redact(str(exc), self._url)}"
                ) from None
        if not delivered:
            reason = " ".join(dict.fromkeys(said)) or "Apprise reported a failure without saying why"
            raise errors.NotifyError(f"{self.name}: {redact(reason, self._url)}")


def check_apprise_url(url: str) -> str | None:
    """None when Apprise can build a notifier from `url`, else one sentence why not that names only its scheme."""
    _quiet_logger()  # before the import: Apprise logs while it loads
    import apprise  # noqa: PLC0415
    from apprise.manager_plugins import NotificationManager  # noqa: PLC0415

    scheme = _scheme(url)
    if scheme is None:
        return "not an Apprise URL (it does not start with a scheme such as slack:// or json://)"
    with _captured() as said:
        try:
            # Apprise also takes some services' own https:// URLs (a Slack webhook's) through their plugins'
            # parse_native_url, so only a failure to build one says the URL cannot be used
            plugin = apprise.Apprise.instantiate(url)
        except Exception as exc:
            said.append(f"{type(exc).__name__}: {exc}")
            plugin = None
    if plugin is not None:
        return None
    if scheme.lower() in ("http", "https"):
        return (
            "not a URL Apprise knows: it takes some services' own https:// URLs (Slack's, Discord's, …), not any; "
            'for an endpoint of your own use json://… or kind = "webhook"'
        )
    # NotificationManager is a singleton, and loads the plugins on first use
    if scheme.lower() not in NotificationManager():  # type: ignore[no-untyped-call]
        return f"not an Apprise URL that Apprise knows (scheme {scheme!r})"
    why = redact(" ".join(dict.fromkeys(said)), url)
    return f"Apprise cannot build a {scheme}:// notifier from this URL" + (f": {why}" if why else "")


def redact(text: str, url: str) -> str:
    """`text` on one line, at most 300 characters, with every secret-looking piece of `url` replaced by `***`,
    and then every run that looks like a URL (`scheme://…`), masked or not, whichever URL it is."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _URL_RUN.sub("***", text)
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LENGTH else text[: _REASON_LENGTH - 1] + "…"


def _secrets(url: str) -> set[str]:
    found = {url, url.strip()}
    match = _SCHEME.match(url.strip())
    rest = url.strip()[match.end() :] if match else url.strip()
    found.add(rest)
    rest, _, query = rest.partition("?")  # Apprise reads a "#" as part of the path (slack://…/#channel)
    netloc, _, path = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        found.add(userinfo)
        found.update(userinfo.split(":"))
    pieces = [*path.split("/"), *re.split(r"[/#]", path)]
    pieces += [value for _, value in parse_qsl(query, keep_blank_values=True)]
    pieces += [value for _, _, value in (pair.partition("=") for pair in query.split("&"))]
    host = hostport.partition("]")[0] + "]" if hostport.startswith("[") else hostport.rsplit(":", 1)[0]
    if not _DNS_NAME.fullmatch(host):  # a host that is not a DNS name is a token (slack://TokenA/…, tgram://bot:key)
        pieces += [hostport, *hostport.split(":")]
    found.update(pieces)
    found |= {unquote(piece) for piece in found}
    return {piece for piece in found if len(piece) >= _MINIMUM_SECRET}


def _scheme(url: str) -> str | None:
    match = _SCHEME.match(url.strip())
    return match.group(1) if match else None


def _quiet_logger() -> logging.Logger:
    """Apprise's logger, cut off from the root logger's handlers (its messages may name hosts and tokens), at
    WARNING whatever the root's level (the failure reasons are warnings), with a NullHandler so that records
    nobody captures are dropped rather than printed by logging's last resort."""
    logger = logging.getLogger(LOGGER)
    logger.propagate = False
    logger.setLevel(logging.WARNING)
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())
    return logger


class _Capture(logging.Handler):
    """Keeps the messages of WARNING and ERROR records logged from the thread that made it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            try:
                self.messages.append(record.getMessage())
            except Exception:  # a plugin's bad format string: keep its template
                self.messages.append(str(record.msg))


@contextmanager
def _captured() -> Iterator[list[str]]:
    """The messages Apprise logs from this thread inside the block (not apprise.LogCapture: it is process-wide)."""
    logger = _quiet_logger()
    capture = _Capture()
    logger.addHandler(capture)
    try:
        yield capture.messages
    finally:
        logger.removeHandler(capture)

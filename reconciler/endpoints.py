"""The daemon's HTTP endpoints (docs/operations.md) as one WSGI application (served by waitress in `daemon`).

Only routing, authentication and parsing live here; what each endpoint does is a callback the daemon provides.
The webhook's payload is never trusted: it only names a repository, whose watches are then checked against the
registry. Secrets are compared in constant time and never echoed.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from reconciler import errors, model
from reconciler.store import approvals

log = logging.getLogger(__name__)
MAX_BODY = 64 * 1024
Start = Callable[[str, list[tuple[str, str]]], Any]
Reply = tuple[str, list[tuple[str, str]], bytes]
_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    503: "Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class Server:
    """Where the endpoints listen, and the secrets they check."""

    host: str
    port: int
    token: str | None
    webhook_secret: str | None

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "::1", "localhost") or self.host.startswith("127.")


@dataclass(frozen=True, slots=True)
class Callbacks:
    alive: Callable[[], bool]
    ready: Callable[[], tuple[bool, str]]
    status: Callable[[], dict[str, Any]]
    metrics: Callable[[], bytes]
    reconcile: Callable[[Sequence[str]], list[str]]  # watch names (all when empty) -> the names queued
    repository: Callable[[model.ImageRef], list[str]]  # a pushed repository -> the names of its watches queued
    page: Callable[[], dict[str, Any]] = dict  # what the status page shows (page.render's document)
    # (watch, digest or None, approve?, by, action id or None) -> the decided action's document; NotWaiting when
    # none waits (or not that one)
    decide: Callable[[str, str | None, bool, str, int | None], dict[str, Any]] | None = None


# The status page and its files: never cached, never framed, no script but the daemon's own (page.CSP).
_PAGE_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]


def _reply(status: int, body: bytes | str | Mapping[str, Any], content_type: str = "application/json") -> Reply:
    if isinstance(body, Mapping):
        payload = json.dumps(body).encode()
    else:
        payload = body.encode() if isinstance(body, str) else body
        content_type = content_type if content_type != "application/json" else "text/plain; charset=utf-8"
    return (
        f"{status} {_REASONS[status]}",
        [("Content-Type", content_type), ("Content-Length", str(len(payload)))],
        (payload),
    )


class Endpoints:
    def __init__(self, *, callbacks: Callbacks, token: str | None, webhook_secret: str | None, loopback: bool) -> None:
        self._cb = callbacks
        self._token = token
        self._webhook_secret = webhook_secret
        self._open_reconcile = token is None and loopback  # no token: only a loopback listener may trigger

    def __call__(self, environ: Mapping[str, Any], start_response: Start) -> Iterable[bytes]:
        try:
            status, headers, body = self._route(environ)
        except Exception:  # an endpoint's bug must not take the daemon down, nor leak a traceback to the caller
            path = str(environ.get("PATH_INFO", ""))
            shown = "/hooks/dockerhub/…" if path.startswith("/hooks/dockerhub/") else path  # the secret is in it
            log.exception("error serving %s %s", environ.get("REQUEST_METHOD"), shown)
            status, headers, body = "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error"
        start_response(status, headers)
        return [body]

    def _route(self, environ: Mapping[str, Any]) -> Reply:
        method, path = environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/")
        gets: dict[str, Callable[[], Reply]] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/status": self._status,
        }
        if path in gets:
            return gets[path]() if method in ("GET", "HEAD") else _reply(405, "use GET")
        if path == "/":
            return self._page() if method in ("GET", "HEAD") else _reply(405, "use GET")
        if path.startswith("/static/"):
            return self._asset(path.removeprefix("/static/")) if method in ("GET", "HEAD") else _reply(405, "use GET")
        if path == "/reconcile":
            return self._reconcile(environ) if method == "POST" else _reply(405, "use POST")
        if path in ("/approve", "/reject"):
            return self._decide(environ, approve=path == "/approve") if method == "POST" else _reply(405, "use POST")
        if path.startswith("/hooks/dockerhub/"):
            return (
                self._hook(environ, path.removeprefix("/hooks/dockerhub/"))
                if method == "POST"
                else _reply(405, "use POST")
            )
        return _reply(404, "not found")

    def _healthz(self) -> Reply:
        return _reply(200, "ok") if self._cb.alive() else _reply(503, "scheduler stopped")

    def _readyz(self) -> Reply:
        ready, why = self._cb.ready()
        return _reply(200 if ready else 503, why)

    def _metrics(self) -> Reply:
        return _reply(200, self._cb.metrics(), "text/plain; version=0.0.4; charset=utf-8")

    def _status(self) -> Reply:
        return _reply(200, self._cb.status())

    def _page(self) -> Reply:
        from reconciler import page  # noqa: PLC0415  (Jinja2: only when the page is asked for)

        try:
            document = self._cb.page()
        except errors.StoreError as exc:  # the database is away: said, not a 500 at every refresh
            return _reply(503, f"the status page cannot be shown now: {exc}")
        status, headers, body = _reply(200, page.render(document), "text/html; charset=utf-8")
        return (
            status,
            [*headers, ("Content-Security-Policy", page.CSP), ("Cache-Control", "no-store"), *_PAGE_HEADERS],
            body,
        )

    def _asset(self, name: str) -> Reply:
        from reconciler import page  # noqa: PLC0415

        found = page.asset(name)
        if found is None:
            return _reply(404, "not found")
        status, headers, body = _reply(200, found[1], found[0])
        return status, [*headers, ("Cache-Control", "no-cache"), *_PAGE_HEADERS], body

    def _refused(self, environ: Mapping[str, Any], what: str) -> Reply | None:
        """Why a POST that needs the API token is refused (None: it is not)."""
        if self._token is None:
            return _reply(403, f"POST {what} is disabled: set [server].token_env to enable it")
        given = str(environ.get("HTTP_AUTHORIZATION", ""))
        if not given.startswith("Bearer "):
            status, headers, body = _reply(401, "a bearer token is required")
            return status, [*headers, ("WWW-Authenticate", 'Bearer realm="reconciler"')], body
        if not hmac.compare_digest(given.removeprefix("Bearer ").encode(), self._token.encode()):
            return _reply(403, "wrong token")
        return None

    def _decide(self, environ: Mapping[str, Any], *, approve: bool) -> Reply:
        """POST /approve or /reject ?watch=NAME[&digest=…][&by=…]: always needs the token, loopback or not."""
        refused = self._refused(environ, "/approve" if approve else "/reject")
        if refused is not None:
            return refused
        query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        if any(len(values) > 1 for values in query.values()) or not (query.get("watch") or [""])[0]:
            return _reply(400, {"error": "name one watch, once: ?watch=NAME[&digest=sha256:…][&by=NAME][&action=ID]"})
        watch, digest, by, action = (query.get(key, [None])[0] for key in ("watch", "digest", "by", "action"))
        try:
            if digest is not None:
                approvals.digest_prefix(digest)
            by = approvals.checked_name("api" if by is None else by)
            if action is not None and not re.fullmatch(r"[0-9]{1,18}", action):
                raise errors.ConfigError(f"action: expected an action's number, got {action[:40]!r}")
        except errors.ConfigError as exc:
            return _reply(400, {"error": str(exc).replace("--digest: ", "digest: ").replace("--by: ", "by: ")})
        if self._cb.decide is None:
            return _reply(404, "not found")
        try:
            return _reply(
                200, self._cb.decide(watch or "", digest, approve, by, None if action is None else int(action))
            )
        except errors.NotWaiting as exc:
            return _reply(409, {"error": str(exc)})
        except errors.ConfigError as exc:
            return _reply(404, {"error": str(exc)})
        except errors.StoreError as exc:
            return _reply(503, {"error": str(exc)})

    def _reconcile(self, environ: Mapping[str, Any]) -> Reply:
        if not self._open_reconcile:
            refused = self._refused(environ, "/reconcile")
            if refused is not None:
                return refused
        names = parse_qs(str(environ.get("QUERY_STRING", ""))).get("watch", [])
        try:
            queued = self._cb.reconcile(names)
        except errors.ConfigError as exc:
            return _reply(404, {"error": str(exc)})
        except (errors.LockHeld, errors.Stopped) as exc:  # a standby (or stopping) instance runs nothing
            return _reply(503, {"error": str(exc)})
        return _reply(202, {"queued": queued})

    def _hook(self, environ: Mapping[str, Any], secret: str) -> Reply:
        if self._webhook_secret is None or not hmac.compare_digest(secret.encode(), self._webhook_secret.encode()):
            return _reply(403, "forbidden")
        length = str(environ.get("CONTENT_LENGTH") or "0")
        if not re.fullmatch(r"[0-9]{1,9}", length) or int(length) > MAX_BODY:  # not isdigit(): "²" is a digit
            return _reply(413, f"the payload must be at most {MAX_BODY} bytes")
        raw = environ["wsgi.input"].read(int(length))
        try:
            payload = json.loads(raw)
            name = payload["repository"]["repo_name"]
            if not isinstance(name, str):
                raise TypeError(name)
            image = model.ImageRef.parse(name)
        except (ValueError, KeyError, TypeError, RecursionError, errors.ConfigError):  # 3,000 `[` recurse
            return _reply(400, "expected a Docker Hub webhook payload naming repository.repo_name")
        try:
            queued = self._cb.repository(image)
        except (errors.LockHeld, errors.Stopped) as exc:  # a standby (or stopping) instance runs nothing
            return _reply(503, {"error": str(exc)})
        log.info("webhook for %s: checking %s", image, ", ".join(queued) or "no watch")
        return _reply(202, {"repository": str(image), "queued": queued})

"""The endpoint rules that the daemon subprocess tests do not reach: who may POST /reconcile, and how bad webhook
payloads are refused. The WSGI application is called as waitress would call it, with the daemon's callbacks
replaced by recording functions."""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import pytest

from reconciler import endpoints, errors, model


class Recorder:
    def __init__(self) -> None:
        self.reconciled: list[list[str]] = []
        self.repositories: list[model.ImageRef] = []

    def callbacks(self) -> endpoints.Callbacks:
        return endpoints.Callbacks(
            alive=lambda: True,
            ready=lambda: (False, "standby: another instance holds the lease"),
            status=lambda: {"watches": []},
            metrics=lambda: b"# metrics\n",
            reconcile=lambda names: self.reconciled.append(list(names)) or list(names) or ["all"],
            repository=lambda image: self.repositories.append(image) or ["stack-staging"],
        )


def call(
    app: endpoints.Endpoints,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    query: str = "",
    headers: dict[str, str] | None = None,
    length: str | None = None,
) -> tuple[int, bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": length if length is not None else str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    environ.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()})
    seen: dict[str, str] = {}
    out = b"".join(app(environ, lambda status, _headers: seen.setdefault("status", status)))
    return int(seen["status"].split()[0]), out


def app(
    recorder: Recorder, *, token: str | None = None, secret: str | None = "s3cret", loopback: bool = True
) -> endpoints.Endpoints:
    return endpoints.Endpoints(callbacks=recorder.callbacks(), token=token, webhook_secret=secret, loopback=loopback)


def test_without_a_token_post_reconcile_is_open_on_loopback_and_disabled_elsewhere() -> None:
    r = Recorder()
    assert call(app(r, loopback=True), "POST", "/reconcile")[0] == 202
    code, body = call(app(r, loopback=False), "POST", "/reconcile")
    assert code == 403 and b"disabled" in body
    assert r.reconciled == [[]]


def test_with_a_token_post_reconcile_needs_it_even_on_loopback() -> None:
    r = Recorder()
    a = app(r, token="t0ken")
    assert call(a, "POST", "/reconcile")[0] == 401
    assert call(a, "POST", "/reconcile", headers={"Authorization": "Bearer nope"})[0] == 403
    assert call(a, "POST", "/reconcile", headers={"Authorization": "Basic dDp0"})[0] == 401
    code, body = call(a, "POST", "/reconcile", query="watch=a&watch=b", headers={"Authorization": "Bearer t0ken"})
    assert (code, json.loads(body)) == (202, {"queued": ["a", "b"]})
    assert call(a, "GET", "/reconcile")[0] == 405


@pytest.mark.parametrize(
    ("body", "length", "expected"),
    [
        pytest.param(b"", None, 400, id="empty"),
        pytest.param(b'{"repository": {"repo_name": "xchem/fragalysis-st', None, 400, id="truncated"),
        pytest.param(b'{"repository": {"repo_name": 42}}', None, 400, id="name-not-a-string"),
        pytest.param(b'{"repository": "xchem/fragalysis-stack"}', None, 400, id="repository-not-a-table"),
        pytest.param(b'{"push_data": {"tag": "latest"}}', None, 400, id="no-repository"),
        pytest.param(b'{"repository": {"repo_name": "Not A Repo!"}}', None, 400, id="invalid-name"),
        pytest.param(b"x", str(10**6), 413, id="oversized"),
        pytest.param(b"x", "-1", 413, id="negative-length"),
    ],
)
def test_bad_webhook_payloads_are_refused_and_nothing_is_checked(
    body: bytes, length: str | None, expected: int
) -> None:
    r = Recorder()
    assert call(app(r), "POST", "/hooks/dockerhub/s3cret", body=body, length=length)[0] == expected
    assert r.repositories == []


def test_a_webhook_names_only_a_repository_whose_watches_are_checked() -> None:
    r = Recorder()
    payload = json.dumps(
        {
            "repository": {"repo_name": "xchem/fragalysis-stack"},
            "push_data": {"tag": "evil; rm -rf /", "digest": "sha256:forged"},
        }
    ).encode()
    code, body = call(app(r), "POST", "/hooks/dockerhub/s3cret", body=payload)
    assert code == 202 and json.loads(body)["repository"] == "docker.io/xchem/fragalysis-stack"
    assert r.repositories == [model.ImageRef.parse("xchem/fragalysis-stack")]  # nothing else of the payload is used


def test_webhooks_are_refused_without_a_configured_secret_or_with_a_wrong_one() -> None:
    r = Recorder()
    payload = b'{"repository": {"repo_name": "xchem/x"}}'
    assert call(app(r, secret=None), "POST", "/hooks/dockerhub/anything", body=payload)[0] == 403
    assert call(app(r), "POST", "/hooks/dockerhub/s3cre", body=payload)[0] == 403
    assert call(app(r), "POST", "/hooks/dockerhub/", body=payload)[0] == 403
    assert r.repositories == []


def test_readyz_reports_standby_and_unknown_paths_are_404() -> None:
    r = Recorder()
    assert call(app(r), "GET", "/readyz") == (503, b"standby: another instance holds the lease")
    assert call(app(r), "GET", "/nope")[0] == 404
    assert call(app(r), "GET", "/metrics") == (200, b"# metrics\n")


# --- approvals and the status page ----------------------------------------------------------------------------------


class Decisions(Recorder):
    """Records decisions; `waiting` is the one digest of `stack-production` that waits."""

    waiting = "sha256:" + "ab" * 32

    def __init__(self) -> None:
        super().__init__()
        self.decided: list[tuple[str, str | None, bool, str, int | None]] = []

    def decide(self, watch: str, digest: str | None, approve: bool, by: str, action: int | None) -> dict[str, Any]:
        if watch != "stack-production":
            raise errors.ConfigError(f"no watch named {watch!r}")
        if digest not in (None, self.waiting) or self.decided:
            raise errors.NotWaiting(f"{digest} of watch {watch} does not wait for approval: it is superseded")
        self.decided.append((watch, digest, approve, by, action))
        return {"watch": watch, "action": {"id": 3, "status": "planned" if approve else "rejected"}}

    def callbacks(self) -> endpoints.Callbacks:
        return dataclasses.replace(
            super().callbacks(),
            decide=self.decide,
            page=lambda: {"status": {"generated_at": "2026-11-27T09:00:00Z", "watches": []}, "standby": False},
        )


@pytest.mark.parametrize("path", ["/approve", "/reject"])
def test_approving_always_needs_the_token_even_on_loopback(path: str) -> None:
    r = Decisions()
    query = f"watch=stack-production&digest={r.waiting}"
    assert call(app(r, token=None, loopback=True), "POST", path, query=query)[0] == 403
    a = app(r, token="t0ken")
    assert call(a, "POST", path, query=query)[0] == 401
    assert call(a, "POST", path, query=query, headers={"Authorization": "Bearer nope"})[0] == 403
    assert call(a, "GET", path, query=query)[0] == 405  # a GET never decides
    assert r.decided == []
    code, body = call(a, "POST", path, query=query + "&by=alice", headers={"Authorization": "Bearer t0ken"})
    assert code == 200 and json.loads(body)["watch"] == "stack-production"
    assert r.decided == [("stack-production", r.waiting, path == "/approve", "alice", None)]


def test_a_decision_names_one_watch_and_a_well_formed_digest() -> None:
    r = Decisions()
    a, bearer = app(r, token="t0ken"), {"Authorization": "Bearer t0ken"}
    for query, expected in [
        ("", 400),
        ("watch=", 400),
        ("watch=a&watch=b", 400),
        ("watch=stack-production&digest=", 400),  # blank is not absent: it would decide whatever waits
        (f"watch=stack-production&digest={r.waiting}&digest={r.waiting}", 400),
        ("watch=stack-production&by=", 400),
        ("watch=stack-production&by=a%0Ab", 400),
        ("watch=stack-production&action=x", 400),
        ("watch=stack-production&digest=latest", 400),
        ("watch=stack-production&by=" + "x" * 201, 400),
        ("watch=nosuch", 404),
        ("watch=stack-production&digest=sha256:" + "cd" * 32, 409),
    ]:
        code, body = call(a, "POST", "/approve", query=query, headers=bearer)
        assert code == expected, (query, body)
        assert "error" in json.loads(body) and b"\n" not in json.loads(body)["error"].encode()
    assert r.decided == []
    assert call(a, "POST", "/approve", query="watch=stack-production&action=3", headers=bearer)[0] == 200
    assert r.decided == [("stack-production", None, True, "api", 3)]  # no name given: recorded as the API's
    code, body = call(a, "POST", "/approve", query="watch=stack-production", headers=bearer)
    assert code == 409 and "does not wait for approval" in json.loads(body)["error"]


def _headers(a: endpoints.Endpoints, path: str) -> tuple[int, dict[str, str], bytes]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.input": io.BytesIO(),
    }
    seen: dict[str, Any] = {}
    body = b"".join(a(environ, lambda status, headers: seen.update(status=status, headers=dict(headers))))
    return int(seen["status"].split()[0]), seen["headers"], body


def test_the_page_is_sent_with_a_strict_policy_and_its_files_only_from_an_allowlist() -> None:
    a = app(Decisions())
    code, headers, body = _headers(a, "/")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Cache-Control"] == "no-store"
    assert b'<script src="/static/page.js"' in body
    code, headers, body = _headers(a, "/static/page.js")
    assert code == 200 and headers["Content-Type"].startswith("text/javascript") and body
    for path in ("/static/../page.py", "/static/%2e%2e/page.py", "/static/page.html", "/static/"):
        assert _headers(a, path)[0] == 404, path
    assert call(a, "POST", "/")[0] == 405

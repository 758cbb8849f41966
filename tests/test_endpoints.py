"""The endpoint rules that the daemon subprocess tests do not reach: who may POST /reconcile, and how bad webhook
payloads are refused. The WSGI application is called as waitress would call it, with the daemon's callbacks
replaced by recording functions."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from reconciler import endpoints, model


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

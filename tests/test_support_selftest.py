"""Proves the test infrastructure itself: the real registry, the push helpers and the token flow."""

from __future__ import annotations

import re

import requests

from tests.support import registry as support
from tests.support.token_server import TokenRegistry, authed_session


def _head(base: str, repo: str, ref: str, token: str | None = None) -> requests.Response:
    headers = {"Accept": support.ACCEPT_ALL}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.head(f"{base}/v2/{repo}/manifests/{ref}", headers=headers, timeout=5)


def test_schema2_push_then_head_returns_pushed_digest(registry: support.LocalRegistry) -> None:
    digest = support.push_schema2(registry.base, "selftest/app", "latest", label="a")
    resp = _head(registry.base, "selftest/app", "latest")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert resp.headers["Docker-Content-Digest"] == digest


def test_oci_index_push_then_head_returns_index_digest(registry: support.LocalRegistry) -> None:
    digest = support.push_oci_index(registry.base, "selftest/multi", "v1", label="a")
    resp = _head(registry.base, "selftest/multi", "v1")
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
    assert resp.headers["Docker-Content-Digest"] == digest


def test_repush_with_another_label_changes_digest(registry: support.LocalRegistry) -> None:
    before = support.push_schema2(registry.base, "selftest/moving", "stable", label="one")
    after = support.push_schema2(registry.base, "selftest/moving", "stable", label="two")
    assert before != after
    assert _head(registry.base, "selftest/moving", "stable").headers["Docker-Content-Digest"] == after
    assert _head(registry.base, "selftest/moving", before).status_code == 200  # old one still there by digest


def test_push_many_gives_distinct_digests_listed_by_tags_list(registry: support.LocalRegistry) -> None:
    tags = [f"1.0.{i}" for i in range(50)]
    digests = support.push_many(registry.base, "selftest/many", tags, label="many")
    assert sorted(digests) == sorted(tags)
    assert len(set(digests.values())) == 50
    listed = requests.get(f"{registry.base}/v2/selftest/many/tags/list", timeout=5).json()
    assert sorted(listed["tags"]) == sorted(tags)


def test_token_registry_anonymous_flow(token_registry: TokenRegistry) -> None:
    reg, tokens = token_registry.registry, token_registry.tokens
    alice = authed_session("alice", "s3cret")
    digest = support.push_schema2(reg.base, "tok/app", "latest", label="t", session=alice)

    denied = _head(reg.base, "tok/app", "latest")
    assert denied.status_code == 401
    challenge = dict(re.findall(r'(\w+)="([^"]*)"', denied.headers["Www-Authenticate"]))
    assert denied.headers["Www-Authenticate"].startswith("Bearer ")
    assert challenge["realm"] == tokens.realm
    assert challenge["service"] == tokens.service
    assert challenge["scope"] == "repository:tok/app:pull"

    before = tokens.requests_total
    query = {"service": challenge["service"], "scope": challenge["scope"]}
    got = requests.get(challenge["realm"], params=query, timeout=5)
    assert got.status_code == 200
    body = got.json()
    assert body["token"] == body["access_token"] and body["expires_in"] == 300
    assert tokens.requests_total == before + 1 and tokens.requests[-1] == (["repository:tok/app:pull"], None)

    ok = _head(reg.base, "tok/app", "latest", token=body["token"])
    assert ok.status_code == 200
    assert ok.headers["Docker-Content-Digest"] == digest


def test_anonymous_token_cannot_push(token_registry: TokenRegistry) -> None:
    reg = token_registry.registry
    resp = authed_session().post(f"{reg.base}/v2/tok/anon/blobs/uploads/", timeout=5)
    assert resp.status_code == 401
    assert 'error="insufficient_scope"' in resp.headers["Www-Authenticate"]


def test_token_server_rejects_wrong_credentials(token_registry: TokenRegistry) -> None:
    tokens = token_registry.tokens
    resp = requests.get(
        tokens.realm,
        params={"service": tokens.service, "scope": "repository:tok/app:pull"},
        auth=("alice", "wrong"),
        timeout=5,
    )
    assert resp.status_code == 401
    assert resp.json() == {"details": "incorrect username or password"}
    assert tokens.requests[-1] == (["repository:tok/app:pull"], "alice")

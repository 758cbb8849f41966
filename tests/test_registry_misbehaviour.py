"""Registries that misbehave: tags outside the OCI grammar, pull-limit headers that stop, next-page links and
redirects that leave the registry's origin. The fake hub plays the registry (2.8.2 can do none of this)."""

from __future__ import annotations

import logging
import re

import pytest
import requests

from reconciler import clients, errors, metrics, model
from reconciler.registry import answers, auth, client
from reconciler.registry.credentials import Credentials
from tests.fakes.hub import FakeHub

STACK = model.ImageRef.parse("xchem/fragalysis-stack")
REPO = STACK.repository
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
LONGEST = "a" * 128  # the grammar's limit: kept
INVALID = [
    "b" * 129,  # one over the limit: would not fit the database column
    "1.2.3\n",  # `$` in a pattern matches before a trailing newline
    "-1.0.0",  # must start with a letter, digit or underscore
    ".hidden",
    "with space",
    "1.0.0+build",
    "tag/with/slash",
    "ümlaut",
    "",
]


def _client(base: str, *, credentials: Credentials | None = None) -> client.RegistryClient:
    session = clients.registry_session(backoff=0.01)
    authenticator = auth.Authenticator(session=session, credentials=lambda _: credentials)
    return client.RegistryClient(session=session, authenticator=authenticator, urls={"docker.io": base})


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# Tags outside the grammar ---------------------------------------------------------------------------------------


def test_tags_outside_the_oci_grammar_are_skipped_and_never_returned(caplog: pytest.LogCaptureFixture) -> None:
    with FakeHub(page_size=4) as hub:
        for i, tag in enumerate(["1.0.0", *INVALID, LONGEST, "1.0.1"]):
            hub.set_tag(REPO, tag, f"sha256:{i:064x}")
        reg = _client(hub.base)
        with caplog.at_level(logging.WARNING, logger="reconciler.registry.client"):
            assert reg.tags(STACK) == ["1.0.0", LONGEST, "1.0.1"]
    warned = _warnings(caplog)
    assert len(warned) == len(INVALID)
    assert all(w.startswith("registry docker.io lists ") and "docker.io/xchem/fragalysis-stack" in w for w in warned)
    assert any("a 129-character tag starting 'bbbb" in w for w in warned)
    assert all("b" * 129 not in w and "\n" not in w for w in warned)  # bounded, and one line each


def test_each_invalid_tag_is_warned_about_once_per_image_not_every_pass(caplog: pytest.LogCaptureFixture) -> None:
    other = model.ImageRef.parse("xchem/other")
    with FakeHub() as hub:
        for repo in (REPO, other.repository):
            hub.set_tag(repo, "1.0.0", D1)
            hub.set_tag(repo, "bad tag", D2)
        reg = _client(hub.base)
        with caplog.at_level(logging.WARNING, logger="reconciler.registry.client"):
            for _ in range(3):
                assert reg.tags(STACK) == ["1.0.0"]
                assert reg.tags(other) == ["1.0.0"]
            hub.set_tag(REPO, "another bad one", D2)
            assert reg.tags(STACK) == ["1.0.0"]
    warned = _warnings(caplog)
    assert len(warned) == 3
    assert sum("docker.io/xchem/fragalysis-stack" in w and "'bad tag'" in w for w in warned) == 1
    assert sum("docker.io/xchem/other" in w and "'bad tag'" in w for w in warned) == 1
    assert sum("'another bad one'" in w for w in warned) == 1


# The pull-limit gauge --------------------------------------------------------------------------------------------


def _gauge_lines(exposition: bytes) -> list[str]:
    return [
        line for line in exposition.decode().splitlines() if line.startswith("reconciler_registry_ratelimit_remaining{")
    ]


def test_the_ratelimit_gauge_disappears_when_the_registry_stops_sending_the_header() -> None:
    with FakeHub(ratelimit=100) as hub:
        hub.set_tag(REPO, "latest", D1)
        reg = _client(hub.base)
        exported = metrics.Metrics(
            registry_requests=lambda: reg.requests, ratelimit_remaining=lambda: reg.ratelimit_remaining
        )
        reg.digest(STACK, "latest")
        assert _gauge_lines(exported.exposition()) == [
            'reconciler_registry_ratelimit_remaining{registry="docker.io"} 100.0'
        ]
        assert reg.tags(STACK) == ["latest"]  # tag lists carry no pull-limit headers: not a reason to drop it
        assert len(_gauge_lines(exported.exposition())) == 1
        hub.set_ratelimit(None)  # pulls.md: no headers means unlimited
        reg.digest(STACK, "latest")
        assert _gauge_lines(exported.exposition()) == []
        hub.set_ratelimit(100, remaining=7)
        reg.digest(STACK, "latest")
        assert _gauge_lines(exported.exposition()) == [
            'reconciler_registry_ratelimit_remaining{registry="docker.io"} 7.0'
        ]


# Next-page links to another origin -------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_next_page_link_to_another_origin_is_refused_and_that_origin_hears_nothing(host: str) -> None:
    alice = Credentials("alice", "s3cret-xyz")
    with FakeHub(page_size=2, require_token=True) as hub, FakeHub(require_token=True) as elsewhere:
        for i in range(5):
            hub.set_tag(REPO, f"1.0.{i}", f"sha256:{i:064x}")
            elsewhere.set_tag(REPO, f"1.0.{i}", f"sha256:{i:064x}")
        hub.link_base = elsewhere.base.replace("127.0.0.1", host)
        reg = _client(hub.base, credentials=alice)
        with pytest.raises(errors.RegistryError) as caught:
            reg.tags(STACK)
        assert elsewhere.requests == []
    message = str(caught.value)
    assert message.startswith(
        "registry docker.io sent a next-page link for the tags of docker.io/xchem/fragalysis-stack"
    )
    assert hub.base in message and hub.link_base in message
    assert "s3cret" not in message and "\n" not in message


def test_an_absolute_next_page_link_on_the_same_origin_is_followed() -> None:
    with FakeHub(page_size=2, require_token=True) as hub:
        for i in range(5):
            hub.set_tag(REPO, f"1.0.{i}", f"sha256:{i:064x}")
        hub.link_base = hub.base
        assert _client(hub.base).tags(STACK) == [f"1.0.{i}" for i in range(5)]
        assert hub.tokens_issued == 1


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        pytest.param("https://ghcr.io/v2/a", "https://ghcr.io:443/v2/b?n=1", True, id="default-port-spelt-out"),
        pytest.param("http://127.0.0.1:5000/v2/a", "HTTP://127.0.0.1:5000/x", True, id="scheme-case"),
        pytest.param("https://Registry.Example/v2", "https://registry.example/v2", True, id="host-case"),
        pytest.param("https://ghcr.io/v2/a", "http://ghcr.io/v2/a", False, id="downgrade"),
        pytest.param("http://ghcr.io/v2/a", "https://ghcr.io/v2/a", False, id="upgrade"),
        pytest.param("https://ghcr.io/v2/a", "https://ghcr.io:8443/v2/a", False, id="port"),
        pytest.param("https://ghcr.io/v2/a", "https://evil.example/v2/a", False, id="host"),
        pytest.param("https://ghcr.io/v2/a", "https://ghcr.io.evil.example/v2/a", False, id="suffix-host"),
        pytest.param("https://ghcr.io/v2/a", "https://ghcr.io:bad/v2/a", False, id="unreadable-port"),
        pytest.param("https://ghcr.io/v2/a", "file:///etc/passwd", False, id="other-scheme"),
    ],
)
def test_origins_compare_scheme_host_and_port(first: str, second: str, same: bool) -> None:
    assert (answers.origin(first) == answers.origin(second)) is same


# Redirects to another host ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_redirect_to_another_host_never_carries_the_bearer_token(host: str) -> None:
    # requests' Session.rebuild_auth drops Authorization when should_strip_auth(old, new) sees another host,
    # port or scheme (bar http->https on default ports), explicit headers= included. This pins that down.
    with FakeHub(require_token=True) as hub, FakeHub() as elsewhere:
        hub.set_tag(REPO, "latest", D1)
        elsewhere.set_tag(REPO, "latest", D2)
        reg = _client(hub.base)
        assert reg.digest(STACK, "latest") == D1  # learns the scheme and caches a token
        hub.redirect_next(1, elsewhere.base.replace("127.0.0.1", host))
        assert reg.digest(STACK, "latest") == D2
    assert hub.requests[-1].headers["Authorization"].startswith("Bearer ")
    (followed,) = elsewhere.requests
    assert followed.path == f"/v2/{REPO}/manifests/latest"
    assert "Authorization" not in followed.headers


def test_a_redirect_to_another_host_never_carries_basic_credentials() -> None:
    bob = Credentials("bob", "hunter2")
    with FakeHub() as hub, FakeHub() as elsewhere:
        hub.set_tag(REPO, "latest", D1)
        elsewhere.set_tag(REPO, "latest", D2)
        session = clients.registry_session(backoff=0.01)
        authenticator = auth.Authenticator(session=session, credentials=lambda _: bob)
        reg = client.RegistryClient(session=session, authenticator=authenticator, urls={"docker.io": hub.base})
        # As after one 401 from a Basic registry: from now on the credentials go up front on every request to it.
        authenticator.answer(registry="docker.io", header='Basic realm="registry"', scope="-", image=str(STACK))
        hub.redirect_next(1, elsewhere.base)
        assert reg.digest(STACK, "latest") == D2
    assert hub.requests[-1].headers["Authorization"] == "Basic Ym9iOmh1bnRlcjI="
    (followed,) = elsewhere.requests
    assert "Authorization" not in followed.headers


def test_a_challenge_from_the_host_a_redirect_led_to_is_not_answered_with_our_credentials() -> None:
    alice = Credentials("alice", "s3cret-xyz")
    with FakeHub() as hub, FakeHub(require_token=True) as elsewhere:
        hub.set_tag(REPO, "latest", D1)
        elsewhere.set_tag(REPO, "latest", D2)
        reg = _client(hub.base, credentials=alice)
        hub.redirect_next(1, elsewhere.base)
        with pytest.raises(errors.RegistryAuthError) as caught:
            reg.digest(STACK, "latest")
        assert elsewhere.count(path_prefix="/token") == 0
        assert all("Authorization" not in r.headers for r in elsewhere.requests)
        assert reg.digest(STACK, "latest") == D1  # the registry's own scheme was not replaced by the other's
    message = str(caught.value)
    assert re.match(r"registry docker\.io redirected docker\.io/xchem/fragalysis-stack:latest to ", message)
    assert elsewhere.base in message and "s3cret" not in message and "\n" not in message


def test_a_same_origin_redirect_keeps_working_with_the_token() -> None:
    with FakeHub(require_token=True) as hub:
        hub.set_tag(REPO, "latest", D1)
        reg = _client(hub.base)
        reg.digest(STACK, "latest")
        hub.redirect_next(1, hub.base)
        assert reg.digest(STACK, "latest") == D1
        assert hub.tokens_issued == 1
        assert all(r.headers["Authorization"].startswith("Bearer ") for r in hub.requests[-2:])


def test_requests_strips_authorization_when_host_port_or_scheme_change() -> None:
    # The client relies on requests for the redirect rule, so check the rule it relies on, not our code.
    session = requests.Session()
    assert session.should_strip_auth("http://127.0.0.1:1/v2/x", "http://127.0.0.1:2/v2/x")
    assert session.should_strip_auth("https://a.example/v2/x", "https://b.example/v2/x")
    assert session.should_strip_auth("https://a.example/v2/x", "http://a.example/v2/x")
    assert not session.should_strip_auth("https://a.example/v2/x", "https://a.example:443/v2/y")

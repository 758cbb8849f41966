"""A repository that does not exist (or that we may not see) reads "…: repository not found or private", naming the
image and the registry, whatever the watch asks (`tag = …` or `tags = "release"`); a missing tag of an existing
repository still says the tag is missing.

The real docker-registry answers 404 NAME_UNKNOWN on the tag list of an unknown repository, and a bodiless 404 on
a manifest HEAD (a GET would say MANIFEST_UNKNOWN, for a missing repository too); with token auth it answers 401
insufficient_scope once the token grants nothing on the repository. Docker Hub answers 401 for a missing and a
private repository alike, after its token server has issued a token anyway: the fake hub plays that.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler import clients, errors, model
from reconciler.registry import auth, client
from reconciler.registry.credentials import Credentials
from tests.fakes.hub import FakeHub
from tests.support.registry import LocalRegistry, push_schema2
from tests.support.token_server import TokenServer, authed_session

MISSING = model.ImageRef.parse("xchem/nosuch")
D1 = "sha256:" + "1" * 64


def _client(base: str, *, credentials: Credentials | None = None) -> client.RegistryClient:
    session = clients.registry_session(backoff=0.01)
    authenticator = auth.Authenticator(session=session, credentials=lambda _: credentials)
    return client.RegistryClient(session=session, authenticator=authenticator, urls={"docker.io": base})


def _not_found(answered: str) -> str:
    return re.escape(f"docker.io/xchem/nosuch: repository not found or private (registry docker.io answered {answered}")


# (a) the real registry: 404 NAME_UNKNOWN -------------------------------------------------------------------------


def test_the_tags_of_a_missing_repository_on_the_real_registry(registry: LocalRegistry) -> None:
    with pytest.raises(errors.RegistryError, match=_not_found("404 NAME_UNKNOWN)")):
        _client(registry.base).tags(MISSING)


def test_a_tag_of_a_missing_repository_on_the_real_registry(registry: LocalRegistry) -> None:
    reg = _client(registry.base)
    with pytest.raises(errors.RegistryError, match=_not_found("404 NAME_UNKNOWN)")) as caught:
        reg.digest(MISSING, "latest")
    assert "has no tag" not in str(caught.value)
    # the HEAD's 404 has no body: the tag list (no pull counted) said which; no manifest GET
    assert reg.requests == {("docker.io", "HEAD", 404): 1, ("docker.io", "GET", 404): 1}


CONFIG = """
[reconciler]
database = "sqlite:///{database}"

[registries."docker.io"]
url = "{url}"

[[watch]]
name = "production"
image = "xchem/nosuch"
tags = "release"

[[watch]]
name = "staging"
image = "xchem/nosuch"
tag = "latest"

[[watch]]
name = "tagless"
image = "xchem/exists"
tag = "nope"
"""


def _reconcile(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "config.toml"
    config.write_text(CONFIG.format(database=tmp_path / "reconciler.db", url=url))
    command = [sys.executable, "-m", "reconciler.cli", "--config", str(config), "reconcile"]
    return subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


def _reasons(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """watch name -> the one warning line the pass logged for it."""
    found = re.findall(r"WARNING reconciler\.engine: watch (\S+): error: (.*)", done.stderr)
    return dict(found)


def test_reconcile_on_the_real_registry_names_the_missing_repository(registry: LocalRegistry, tmp_path: Path) -> None:
    push_schema2(registry.base, "xchem/exists", "latest", label="exists")
    done = _reconcile(tmp_path, registry.base)
    assert done.returncode == 3, done.stderr
    reasons = _reasons(done)
    expected = "docker.io/xchem/nosuch: repository not found or private (registry docker.io answered 404 NAME_UNKNOWN)"
    assert reasons["production"] == expected
    assert reasons["staging"] == expected
    assert reasons["tagless"] == "registry docker.io has no tag 'nope' for docker.io/xchem/exists"
    assert "Traceback" not in done.stderr


# (b) Docker Hub: 401 after an anonymous token for a repository that does not exist -----------------------------


def test_the_hub_answering_401_after_the_token_reads_not_found_or_private() -> None:
    with FakeHub(require_token=True) as hub:
        hub.set_tag("xchem/exists", "latest", D1)
        reg = _client(hub.base)
        with pytest.raises(errors.RegistryError, match=_not_found("401 to anonymous access)")) as by_tag:
            reg.digest(MISSING, "latest")
        with pytest.raises(errors.RegistryError, match=_not_found("401 to anonymous access)")):
            reg.tags(MISSING)
        assert reg.digest(model.ImageRef.parse("xchem/exists"), "latest") == D1
    assert "\n" not in str(by_tag.value)


def test_the_hub_names_the_user_whose_token_does_not_reach_the_repository() -> None:
    with FakeHub(require_token=True) as hub:
        reg = _client(hub.base, credentials=Credentials("alice", "s3cret-xyz"))
        with pytest.raises(errors.RegistryError, match=_not_found("401 to user 'alice')")) as caught:
            reg.digest(MISSING, "latest")
    assert "s3cret" not in str(caught.value)


def test_reconcile_on_the_hub_names_the_missing_repository(tmp_path: Path) -> None:
    with FakeHub(require_token=True) as hub:
        hub.set_tag("xchem/exists", "latest", D1)
        done = _reconcile(tmp_path, hub.base)
    assert done.returncode == 3, done.stderr
    reasons = _reasons(done)
    expected = (
        "docker.io/xchem/nosuch: repository not found or private (registry docker.io answered 401 to anonymous access)"
    )
    assert reasons["production"] == expected
    assert reasons["staging"] == expected
    assert reasons["tagless"] == "registry docker.io has no tag 'nope' for docker.io/xchem/exists"


def test_a_token_the_registry_rejects_as_invalid_is_not_read_as_a_missing_repository() -> None:
    with FakeHub() as hub:
        hub.set_tag(MISSING.repository, "latest", D1)
        challenge = f'Bearer realm="{hub.base}/token",service="registry.docker.io",error="invalid_token"'
        hub.answer_next(2, kind="manifest", status=401, headers={"Www-Authenticate": challenge})
        with pytest.raises(errors.RegistryAuthError, match=r"invalid_token") as caught:
            _client(hub.base).digest(MISSING, "latest")
    assert "not found" not in str(caught.value)


def test_the_real_token_registry_answering_401_for_a_private_repository(tmp_path: Path) -> None:
    """distribution with token auth: an anonymous token grants nothing on a private repository, and the registry
    answers 401 insufficient_scope, as Docker Hub does."""
    if shutil.which("docker-registry") is None:  # as tests/conftest.py: a failure under CI, else a skip
        (pytest.fail if os.environ.get("CI") else pytest.skip)("docker-registry not found on PATH")
    with (
        TokenServer(tmp_path / "keys", users={"alice": "s3cret"}, public={"xchem/public"}) as tokens,
        LocalRegistry(tmp_path / "registry", token=tokens.token_config()) as reg,
    ):
        push_schema2(reg.base, "xchem/nosuch", "latest", label="private", session=authed_session("alice", "s3cret"))
        with pytest.raises(errors.RegistryError, match=_not_found("401 to anonymous access)")):
            _client(reg.base).digest(MISSING, "latest")
        with pytest.raises(errors.RegistryError, match=_not_found("401 to anonymous access)")):
            _client(reg.base).tags(MISSING)
        alice = Credentials("alice", "s3cret")
        assert _client(reg.base, credentials=alice).tags(MISSING) == ["latest"]  # it exists, privately


# (c) a missing tag of an existing repository still says the tag is missing ------------------------------------


def test_a_missing_tag_of_an_existing_repository_on_the_real_registry(registry: LocalRegistry) -> None:
    push_schema2(registry.base, "nf/exists", "latest", label="exists")
    reg = _client(registry.base)
    with pytest.raises(errors.TagNotFound, match=r"^registry docker.io has no tag 'nope' for docker.io/nf/exists$"):
        reg.digest(model.ImageRef.parse("nf/exists"), "nope")
    assert reg.requests == {("docker.io", "HEAD", 404): 1, ("docker.io", "GET", 200): 1}  # the list: it exists


def test_a_missing_tag_of_an_existing_repository_on_the_hub() -> None:
    with FakeHub(require_token=True) as hub:
        hub.set_tag("xchem/exists", "latest", D1)
        with pytest.raises(
            errors.TagNotFound, match=r"^registry docker.io has no tag 'nope' for docker.io/xchem/exists$"
        ):
            _client(hub.base).digest(model.ImageRef.parse("xchem/exists"), "nope")
        assert hub.count("GET", "/v2/xchem/exists/tags/list") == 1  # asked whether the repository exists

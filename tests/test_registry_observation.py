"""Asking registries what a tag points at: the real docker-registry (plain and token auth) for the protocol,
the fake hub only for what 2.8.2 lacks (Link pagination, ratelimit headers, 429)."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from reconciler import clients, config, errors, model
from reconciler.registry import auth, client
from tests.fakes.hub import FakeHub
from tests.support.registry import LocalRegistry, push_many, push_oci_index, push_schema2
from tests.support.token_server import TokenRegistry, authed_session

STACK = model.ImageRef.parse("xchem/fragalysis-stack")


def _client(
    url: str,
    *,
    username: str | None = None,
    password: str | None = None,
    docker_config: str | None = None,
    session: requests.Session | None = None,
) -> client.RegistryClient:
    creds = {}
    if username is not None and password is not None:
        creds = {"username": config.Secret(username, "$TEST_USER"), "password": config.Secret(password, "$TEST_PW")}
    settings = config.Settings(source="test", registries={"docker.io": config.RegistrySettings(url=url, **creds)})
    return clients.registry_client(
        settings, session=session or clients.registry_session(backoff=0.01), docker_config=docker_config
    )


def test_a_schema2_tag_reports_its_digest_and_a_repush_changes_it(registry: LocalRegistry) -> None:
    image = model.ImageRef.parse("obs/schema2")
    first = push_schema2(registry.base, "obs/schema2", "latest", label="one")
    reg = _client(registry.base)
    assert reg.digest(image, "latest") == first
    assert reg.digest(image, "latest") == first
    second = push_schema2(registry.base, "obs/schema2", "latest", label="two")
    assert second != first
    assert reg.digest(image, "latest") == second


def test_a_multi_arch_oci_index_reports_the_index_digest(registry: LocalRegistry) -> None:
    index = push_oci_index(registry.base, "obs/multi", "latest", label="one")
    reg = _client(registry.base)
    assert reg.digest(model.ImageRef.parse("obs/multi"), "latest") == index
    again = push_oci_index(registry.base, "obs/multi", "latest", label="two")
    assert again != index
    assert reg.digest(model.ImageRef.parse("obs/multi"), "latest") == again


def test_steady_state_is_one_head_per_check_and_no_manifest_get(registry: LocalRegistry) -> None:
    push_schema2(registry.base, "obs/steady", "latest", label="one")
    reg = _client(registry.base)
    for _ in range(5):
        reg.digest(model.ImageRef.parse("obs/steady"), "latest")
    assert reg.requests == {("docker.io", "HEAD", 200): 5}


def test_a_missing_tag_names_the_tag_image_and_registry(registry: LocalRegistry) -> None:
    push_schema2(registry.base, "obs/missing", "latest", label="one")
    with pytest.raises(errors.TagNotFound, match=r"registry docker.io has no tag 'nope' for docker.io/obs/missing"):
        _client(registry.base).digest(model.ImageRef.parse("obs/missing"), "nope")


def test_tags_of_the_real_registry_are_all_listed(registry: LocalRegistry) -> None:
    for tag in ("1.0.9", "1.0.10", "latest"):
        push_schema2(registry.base, "obs/tags", tag, label=tag)
    assert sorted(_client(registry.base).tags(model.ImageRef.parse("obs/tags"))) == ["1.0.10", "1.0.9", "latest"]


def test_the_token_registry_works_anonymously_and_one_token_serves_many_requests(
    token_registry: TokenRegistry,
) -> None:
    base = token_registry.registry.base
    digest = push_schema2(base, "tok/anon", "latest", label="a", session=authed_session("alice", "s3cret"))
    before = token_registry.tokens.requests_total
    reg = _client(base)
    for _ in range(20):
        assert reg.digest(model.ImageRef.parse("tok/anon"), "latest") == digest
    assert token_registry.tokens.requests_total - before == 1
    assert token_registry.tokens.requests[-1][1] is None  # anonymous
    # 20 HEADs answered 200, plus the one challenge that started the flow
    assert reg.requests[("docker.io", "HEAD", 200)] == 20
    assert reg.requests[("docker.io", "HEAD", 401)] == 1


def test_the_token_registry_works_with_configured_credentials(token_registry: TokenRegistry) -> None:
    base = token_registry.registry.base
    digest = push_schema2(base, "tok/creds", "latest", label="a", session=authed_session("alice", "s3cret"))
    reg = _client(base, username="alice", password="s3cret")
    assert reg.digest(model.ImageRef.parse("tok/creds"), "latest") == digest
    assert token_registry.tokens.requests[-1][1] == "alice"


def test_wrong_credentials_are_one_clear_error_without_the_password(token_registry: TokenRegistry) -> None:
    reg = _client(token_registry.registry.base, username="alice", password="wrong-pass-xyz")
    with pytest.raises(errors.RegistryAuthError) as caught:
        reg.digest(model.ImageRef.parse("tok/creds"), "latest")
    message = str(caught.value)
    assert "token server of registry docker.io refused user 'alice'" in message
    assert "wrong-pass-xyz" not in message and "\n" not in message


def test_an_expired_token_is_fetched_again(token_registry: TokenRegistry) -> None:
    base = token_registry.registry.base
    push_schema2(base, "tok/expiry", "latest", label="a", session=authed_session("alice", "s3cret"))
    now = [1000.0]
    session = clients.registry_session(backoff=0.01)
    authenticator = auth.Authenticator(session=session, credentials=lambda _: None, clock=lambda: now[0])
    reg = client.RegistryClient(session=session, authenticator=authenticator, urls={"docker.io": base})
    image = model.ImageRef.parse("tok/expiry")
    reg.digest(image, "latest")
    reg.digest(image, "latest")
    assert authenticator.tokens_fetched == 1
    now[0] += 300  # the token server's expires_in
    reg.digest(image, "latest")
    assert authenticator.tokens_fetched == 2


def _docker_config(tmp_path: Path, document: dict[str, object]) -> str:
    folder = tmp_path / "docker"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(document))
    return str(folder / "config.json")


def test_credentials_come_from_the_docker_config(token_registry: TokenRegistry, tmp_path: Path) -> None:
    import base64

    base = token_registry.registry.base
    digest = push_schema2(base, "tok/dockercfg", "latest", label="a", session=authed_session("alice", "s3cret"))
    encoded = base64.b64encode(b"alice:s3cret").decode()
    path = _docker_config(tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": encoded}}})
    assert _client(base, docker_config=path).digest(model.ImageRef.parse("tok/dockercfg"), "latest") == digest
    assert token_registry.tokens.requests[-1][1] == "alice"


def test_credentials_come_from_a_docker_credential_helper(
    token_registry: TokenRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = token_registry.registry.base
    digest = push_schema2(base, "tok/helper", "latest", label="a", session=authed_session("alice", "s3cret"))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-testhelper"
    helper.write_text(
        "#!/bin/sh\nread server\n"
        'echo "{\\"ServerURL\\": \\"$server\\", \\"Username\\": \\"alice\\", \\"Secret\\": \\"s3cret\\"}"\n'
    )
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    path = _docker_config(tmp_path, {"credHelpers": {"https://index.docker.io/v1/": "testhelper"}})
    assert _client(base, docker_config=path).digest(model.ImageRef.parse("tok/helper"), "latest") == digest
    assert token_registry.tokens.requests[-1][1] == "alice"


def test_a_basic_auth_challenge_without_credentials_says_what_to_configure() -> None:
    with FakeHub() as hub:
        session = clients.registry_session(backoff=0.01)
        authenticator = auth.Authenticator(session=session, credentials=lambda _: None)
        with pytest.raises(errors.RegistryAuthError, match="needs a username and password"):
            authenticator.answer(registry="docker.io", header='Basic realm="basic-realm"', scope="s", image="x")
        assert hub.count() == 0


@pytest.mark.parametrize("cursor", [pytest.param(False, id="last-and-n"), pytest.param(True, id="opaque-cursor")])
def test_tag_listing_follows_link_pagination_over_several_pages(cursor: bool) -> None:
    tags = [f"1.0.{i}" for i in range(250)]
    with FakeHub(page_size=100, opaque_cursor=cursor) as hub:
        for i, tag in enumerate(tags):
            hub.set_tag("xchem/fragalysis-stack", tag, f"sha256:{i:064x}")
        reg = _client(hub.base)
        assert reg.tags(STACK) == tags
        assert hub.count(method="GET", path_prefix="/v2/xchem/fragalysis-stack/tags/list") == 3


def test_a_token_flow_registry_with_pages_uses_one_token() -> None:
    with FakeHub(page_size=10, require_token=True) as hub:
        for i in range(35):
            hub.set_tag("xchem/fragalysis-stack", f"2026.1.{i}", f"sha256:{i:064x}")
        reg = _client(hub.base)
        assert len(reg.tags(STACK)) == 35
        assert reg.digest(STACK, "2026.1.34") == f"sha256:{34:064x}"
        assert hub.tokens_issued == 1


def test_a_429_with_retry_after_is_retried_after_the_wait() -> None:
    with FakeHub() as hub:
        hub.set_tag("xchem/fragalysis-stack", "latest", "sha256:" + "a" * 64)
        hub.fail_next(1, status=429, retry_after="1", kind="manifest")
        assert _client(hub.base).digest(STACK, "latest") == "sha256:" + "a" * 64
        heads = [r for r in hub.requests if r[1] == "HEAD"]
        assert len(heads) == 2
        assert heads[1][0] - heads[0][0] >= 0.95


def test_a_429_without_retry_after_is_retried_with_backoff() -> None:
    with FakeHub() as hub:
        hub.set_tag("xchem/fragalysis-stack", "latest", "sha256:" + "b" * 64)
        hub.fail_next(2, status=429, kind="manifest")
        assert _client(hub.base).digest(STACK, "latest") == "sha256:" + "b" * 64
        assert hub.count(method="HEAD") == 3


def test_a_lasting_429_is_one_clear_rate_limit_error() -> None:
    with FakeHub() as hub:
        hub.set_tag("xchem/fragalysis-stack", "latest", "sha256:" + "c" * 64)
        hub.fail_next(10, status=429, kind="manifest")
        with pytest.raises(errors.RegistryRateLimited, match="registry docker.io is rate-limiting") as caught:
            _client(hub.base).digest(STACK, "latest")
        assert "docker.io/xchem/fragalysis-stack:latest" in str(caught.value)
        assert hub.count(method="HEAD") == 4  # the first try and three retries


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(status: int) -> None:
    with FakeHub() as hub:
        hub.set_tag("xchem/fragalysis-stack", "latest", "sha256:" + "d" * 64)
        hub.fail_next(1, status=status, kind="manifest")
        assert _client(hub.base).digest(STACK, "latest") == "sha256:" + "d" * 64


def test_ratelimit_headers_are_kept_per_registry() -> None:
    with FakeHub(ratelimit=100) as hub:
        hub.set_tag("xchem/fragalysis-stack", "latest", "sha256:" + "e" * 64)
        reg = _client(hub.base)
        reg.digest(STACK, "latest")
        assert reg.ratelimit_remaining == {"docker.io": 100}  # HEAD does not count as a pull


def test_an_unreachable_registry_is_one_clear_error() -> None:
    reg = _client("http://127.0.0.1:9", session=clients.registry_session(retries=0))
    with pytest.raises(errors.RegistryError) as caught:
        reg.digest(STACK, "latest")
    assert str(caught.value) == (
        "cannot reach registry docker.io for docker.io/xchem/fragalysis-stack:latest at "
        "http://127.0.0.1:9/v2/xchem/fragalysis-stack/manifests/latest: connection refused"
    )


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b'{"name": "x", "tags": "latest"}', id="tags-not-a-list"),
        pytest.param(b'{"name": "x", "tags": [1, 2]}', id="tags-not-strings"),
        pytest.param(b"[]", id="wrong-top-level"),
    ],
)
def test_a_malformed_tag_list_is_one_clear_error(body: bytes) -> None:
    response = requests.Response()
    response.status_code = 200
    response._content = body
    with pytest.raises(errors.RegistryError, match="malformed tag list for docker.io/xchem/fragalysis-stack"):
        client.RegistryClient._parse_tags(response, STACK)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:samalba/my-app:pull,push"',
            {
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:samalba/my-app:pull,push",
            },
            id="docker-hub-with-comma-in-scope",
        ),
        pytest.param(
            'Bearer realm="http://127.0.0.1/token",service="test",scope="repository:a:pull",error="invalid_token"',
            {
                "realm": "http://127.0.0.1/token",
                "service": "test",
                "scope": "repository:a:pull",
                "error": "invalid_token",
            },
            id="with-error",
        ),
        pytest.param('Basic realm="basic-realm"', {"realm": "basic-realm"}, id="basic"),
    ],
)
def test_challenges_are_parsed_with_commas_inside_quotes(header: str, expected: dict[str, str]) -> None:
    challenge = auth.parse_challenge(header)
    assert challenge is not None
    assert dict(challenge.params) == expected


def test_a_basic_auth_registry_works_with_credentials_and_refuses_without(basic_registry: LocalRegistry) -> None:
    pushing = requests.Session()
    pushing.auth = ("bob", "hunter2")
    digest = push_schema2(basic_registry.base, "basic/app", "latest", label="a", session=pushing)
    image = model.ImageRef.parse("basic/app")
    reg = _client(basic_registry.base, username="bob", password="hunter2")
    assert reg.digest(image, "latest") == digest
    assert reg.digest(image, "latest") == digest
    assert reg.requests[("docker.io", "HEAD", 401)] == 1  # the scheme is learnt once, then sent up front
    with pytest.raises(errors.RegistryAuthError, match="needs a username and password"):
        _client(basic_registry.base).digest(image, "latest")
    with pytest.raises(errors.RegistryAuthError, match="refused access") as caught:
        _client(basic_registry.base, username="bob", password="not-hunter2-xyz").digest(image, "latest")
    assert "not-hunter2-xyz" not in str(caught.value)


def test_concurrent_first_checks_of_one_repository_share_one_token(token_registry: TokenRegistry) -> None:
    base = token_registry.registry.base
    tags = [f"t{i}" for i in range(40)]
    digests = push_many(base, "tok/concurrent", tags, label="c", session=authed_session("alice", "s3cret"))
    before = token_registry.tokens.requests_total
    reg = _client(base)
    image = model.ImageRef.parse("tok/concurrent")
    with ThreadPoolExecutor(16) as pool:
        found = dict(zip(tags, pool.map(lambda t: reg.digest(image, t), tags), strict=True))
    assert found == digests
    assert token_registry.tokens.requests_total - before == 1


@pytest.mark.parametrize(
    ("name", "registry", "repository"),
    [
        pytest.param("xchem/fragalysis-stack", "docker.io", "xchem/fragalysis-stack", id="hub-user-repo"),
        pytest.param("busybox", "docker.io", "library/busybox", id="official-image"),
        pytest.param("docker.io/xchem/fragalysis-stack", "docker.io", "xchem/fragalysis-stack", id="docker-io-prefix"),
        pytest.param("docker.io/busybox", "docker.io", "library/busybox", id="docker-io-official"),
        pytest.param("index.docker.io/xchem/x", "docker.io", "xchem/x", id="index-alias"),
        pytest.param("localhost:5000/foo/bar", "localhost:5000", "foo/bar", id="localhost-port"),
        pytest.param("localhost/foo", "localhost", "foo", id="localhost"),
        pytest.param("ghcr.io/org/img", "ghcr.io", "org/img", id="ghcr"),
        pytest.param("127.0.0.1:5000/a/b", "127.0.0.1:5000", "a/b", id="ip-port"),
    ],
)
def test_image_names_are_normalised_as_docker_does(name: str, registry: str, repository: str) -> None:
    ref = model.ImageRef.parse(name)
    assert (ref.registry, ref.repository) == (registry, repository)


def test_docker_hub_is_served_by_registry_1() -> None:
    assert client.api_base("docker.io", {}) == "https://registry-1.docker.io"
    assert client.api_base("ghcr.io", {}) == "https://ghcr.io"
    assert client.api_base("docker.io", {"docker.io": "http://127.0.0.1:5000/"}) == "http://127.0.0.1:5000"


def test_the_session_reads_ca_and_proxy_settings_once_unless_proxies_are_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/site-bundle.pem")
    session = clients.registry_session()
    assert (session.trust_env, session.verify) == (False, "/etc/ssl/certs/site-bundle.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert clients.registry_session().trust_env is True  # requests then honours HTTPS_PROXY and NO_PROXY per request


def test_the_urllib3_floor_has_retry_after_max() -> None:
    # clients.registry_session passes Retry(retry_after_max=…), which urllib3 2.6.3 introduced: its changelog,
    # "2.6.3 (2026-01-07) … Started treating Retry-After times greater than 6 hours as 6 hours by default
    # (#3743)"; the 2.6.2 wheel's urllib3/util/retry.py has no retry_after_max, the 2.6.3 one has it.
    import tomllib
    from pathlib import Path

    from packaging.requirements import Requirement
    from packaging.version import Version

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    (pin,) = [Requirement(d) for d in pyproject["project"]["dependencies"] if Requirement(d).name == "urllib3"]
    floors = [Version(s.version) for s in pin.specifier if s.operator in (">=", "==", "~=")]
    assert floors and max(floors) >= Version("2.6.3"), f"{pin} admits a urllib3 without Retry(retry_after_max=…)"
    assert not pin.specifier.contains("2.6.2") and pin.specifier.contains("2.6.3")

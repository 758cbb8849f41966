"""The Docker Hub fake itself answers like Docker Hub does, over real HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urljoin

import pytest
import requests

from tests.fakes.hub import DOCKER_LIST, DOCKER_V2, OCI_INDEX, OCI_MANIFEST, PULL_LIMIT_MESSAGE, FakeHub

ACCEPT_ALL = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_V2])
REPO = "xchem/fragalysis-stack"
D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def _digest(i: int) -> str:
    return f"sha256:{i:064x}"


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with FakeHub() as fake:
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _manifest_url(hub: FakeHub, ref: str, repo: str = REPO) -> str:
    return f"{hub.base}/v2/{repo}/manifests/{ref}"


def _follow_tags(http: requests.Session, url: str) -> list[requests.Response]:
    pages = []
    while True:
        resp = http.get(url, timeout=5)
        assert resp.status_code == 200, resp.text
        pages.append(resp)
        if "next" not in resp.links:
            return pages
        url = urljoin(url, resp.links["next"]["url"])


def _challenge(resp: requests.Response) -> dict[str, str]:
    header = resp.headers["Www-Authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_v2_ping(hub: FakeHub, http: requests.Session) -> None:
    resp = http.get(f"{hub.base}/v2/", timeout=5)
    assert resp.status_code == 200
    assert resp.json() == {}
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"


def test_tags_are_paged_with_a_relative_link_in_insertion_order(http: requests.Session) -> None:
    tags = [f"2026.{i % 13}.{i}" for i in range(250)][::-1]  # deliberately neither sorted nor reverse-sorted
    tags[10], tags[200] = tags[200], tags[10]
    with FakeHub(page_size=100) as hub:
        for i, tag in enumerate(tags):
            hub.set_tag(REPO, tag, _digest(i))
        pages = _follow_tags(http, f"{hub.base}/v2/{REPO}/tags/list")
    assert [len(p.json()["tags"]) for p in pages] == [100, 100, 50]
    assert [t for p in pages for t in p.json()["tags"]] == tags
    assert all(p.json()["name"] == REPO for p in pages)
    assert pages[0].headers["Link"] == f'</v2/{REPO}/tags/list?last={tags[99]}&n=100>; rel="next"'
    assert "Link" not in pages[2].headers


def test_n_is_honoured_when_smaller_and_clamped_when_larger(hub: FakeHub, http: requests.Session) -> None:
    for i in range(5):
        hub.set_tag(REPO, f"t{i}", _digest(i))
    url = f"{hub.base}/v2/{REPO}/tags/list"
    small = http.get(url, params={"n": "2"}, timeout=5)
    assert small.json()["tags"] == ["t0", "t1"]
    assert small.headers["Link"] == f'</v2/{REPO}/tags/list?last=t1&n=2>; rel="next"'
    assert [t for p in _follow_tags(http, f"{url}?n=2") for t in p.json()["tags"]] == [f"t{i}" for i in range(5)]
    after = http.get(url, params={"last": "t3"}, timeout=5)
    assert after.json()["tags"] == ["t4"] and "Link" not in after.headers
    empty = http.get(url, params={"n": "0"}, timeout=5)
    assert empty.json()["tags"] == [] and "Link" not in empty.headers
    assert http.get(url, params={"n": "1000"}, timeout=5).json()["tags"] == [f"t{i}" for i in range(5)]
    bad = http.get(url, params={"n": "abc"}, timeout=5)
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["code"] == "PAGINATION_NUMBER_INVALID"


def test_link_values_are_url_encoded(http: requests.Session) -> None:
    with FakeHub(page_size=1) as hub:
        hub.set_tag(REPO, "a&b=c", D1)  # not a valid tag, but proves the encoding
        hub.set_tag(REPO, "z", D2)
        resp = http.get(f"{hub.base}/v2/{REPO}/tags/list", timeout=5)
    assert resp.headers["Link"] == f'</v2/{REPO}/tags/list?last=a%26b%3Dc&n=1>; rel="next"'


def test_opaque_cursor(http: requests.Session) -> None:
    tags = [f"v{i}" for i in range(7)]
    with FakeHub(page_size=3, opaque_cursor=True) as hub:
        for i, tag in enumerate(tags):
            hub.set_tag(REPO, tag, _digest(i))
        pages = _follow_tags(http, f"{hub.base}/v2/{REPO}/tags/list")
        bogus = http.get(f"{hub.base}/v2/{REPO}/tags/list?next_page=nope&n=3", timeout=5)
    assert [t for p in pages for t in p.json()["tags"]] == tags
    assert len(pages) == 3
    assert re.fullmatch(rf'</v2/{REPO}/tags/list\?next_page=[\w-]+&n=3>; rel="next"', pages[0].headers["Link"])
    assert "last=" not in pages[0].headers["Link"]
    assert bogus.status_code == 400


def test_unknown_repo(hub: FakeHub, http: requests.Session) -> None:
    tags = http.get(f"{hub.base}/v2/no/such/tags/list", timeout=5)
    assert tags.status_code == 404
    assert tags.json() == {
        "errors": [
            {"code": "NAME_UNKNOWN", "message": "repository name not known to registry", "detail": {"name": "no/such"}}
        ]
    }
    get = http.get(_manifest_url(hub, "latest", "no/such"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert get.status_code == 404 and get.json()["errors"][0]["code"] == "NAME_UNKNOWN"
    head = http.head(_manifest_url(hub, "latest", "no/such"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert head.status_code == 404 and head.content == b""


def test_manifest_head_and_get(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1)
    head = http.head(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["Docker-Content-Digest"] == D1
    assert head.headers["Content-Type"] == OCI_INDEX
    assert head.headers["Etag"] == f'"{D1}"'
    assert head.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert "ratelimit-limit" not in head.headers  # unlimited unless configured
    get = http.get(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert get.status_code == 200
    assert int(head.headers["Content-Length"]) == len(get.content) > 0
    assert get.json()["mediaType"] == OCI_INDEX
    assert get.content == http.get(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5).content
    by_digest = http.head(_manifest_url(hub, D1), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert by_digest.status_code == 200 and by_digest.headers["Docker-Content-Digest"] == D1
    hub.set_tag(REPO, "latest", D2)
    moved = http.head(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert moved.headers["Docker-Content-Digest"] == D2


def test_unknown_tag(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1)
    hub.set_tag(REPO, "gone", D2)
    hub.delete_tag(REPO, "gone")
    get = http.get(_manifest_url(hub, "gone"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert get.status_code == 404
    assert get.json() == {
        "errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown", "detail": {"Tag": "gone"}}]
    }
    head = http.head(_manifest_url(hub, "gone"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert head.status_code == 404 and head.content == b""
    assert head.headers["Content-Type"].startswith("application/json")
    assert int(head.headers["Content-Length"]) == len(get.content)
    by_digest = http.get(_manifest_url(hub, D2), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert by_digest.json()["errors"][0]["detail"] == {"Name": REPO, "Revision": D2}


@pytest.mark.parametrize(
    ("stored", "accept", "status", "message"),
    [
        (OCI_INDEX, DOCKER_V2, 404, "OCI index found, but accept header does not support OCI indexes"),
        (OCI_INDEX, None, 404, "OCI index found, but accept header does not support OCI indexes"),
        (
            OCI_MANIFEST,
            f"{DOCKER_LIST}, {DOCKER_V2}",
            404,
            "OCI manifest found, but accept header does not support OCI manifests",
        ),
        (DOCKER_V2, None, 400, "manifest invalid"),
    ],
)
def test_accept_negotiation_refuses(
    hub: FakeHub, http: requests.Session, stored: str, accept: str | None, status: int, message: str
) -> None:
    hub.set_tag(REPO, "latest", D1, media_type=stored)
    headers = {"Accept": accept} if accept else {"Accept": None}  # None drops requests' default "*/*"
    resp = http.get(_manifest_url(hub, "latest"), headers=headers, timeout=5)
    assert resp.status_code == status
    assert resp.json()["errors"][0]["message"] == message
    ok = http.get(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert ok.status_code == 200 and ok.headers["Content-Type"] == stored


def test_accept_with_quality_parameters(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1)
    resp = http.head(
        _manifest_url(hub, "latest"), headers={"Accept": f"{DOCKER_V2};q=0.9, {OCI_INDEX};q=0.5"}, timeout=5
    )
    assert resp.status_code == 200 and resp.headers["Docker-Content-Digest"] == D1


def test_docker_list_without_list_accept_gives_a_different_digest(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1, media_type=DOCKER_LIST)
    platform = http.head(_manifest_url(hub, "latest"), headers={"Accept": DOCKER_V2}, timeout=5)
    assert platform.status_code == 200
    assert platform.headers["Content-Type"] == DOCKER_V2
    assert platform.headers["Docker-Content-Digest"] not in ("", D1)
    full = http.head(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert full.headers["Docker-Content-Digest"] == D1


def test_head_does_not_count_against_the_pull_limit_but_get_does(http: requests.Session) -> None:
    with FakeHub(ratelimit=2) as hub:
        hub.set_tag(REPO, "latest", D1)
        url, accept = _manifest_url(hub, "latest"), {"Accept": ACCEPT_ALL}

        def remaining(resp: requests.Response) -> str:
            assert resp.headers["ratelimit-limit"] == "2;w=21600"
            assert resp.headers["docker-ratelimit-source"] == "127.0.0.1"
            return resp.headers["ratelimit-remaining"]

        assert remaining(http.head(url, headers=accept, timeout=5)) == "2;w=21600"
        assert remaining(http.head(url, headers=accept, timeout=5)) == "2;w=21600"
        assert remaining(http.get(url, headers=accept, timeout=5)) == "1;w=21600"
        assert remaining(http.head(url, headers=accept, timeout=5)) == "1;w=21600"
        assert remaining(http.get(url, headers=accept, timeout=5)) == "0;w=21600"
        exhausted = http.get(url, headers=accept, timeout=5)
        assert exhausted.status_code == 429
        assert exhausted.json() == {"errors": [{"code": "TOOMANYREQUESTS", "message": PULL_LIMIT_MESSAGE}]}
        assert remaining(exhausted) == "0;w=21600"
        still = http.head(url, headers=accept, timeout=5)
        assert still.status_code == 200 and remaining(still) == "0;w=21600"
        hub.set_ratelimit(100, remaining=76)
        reset = http.head(url, headers=accept, timeout=5)
        assert (reset.headers["ratelimit-limit"], reset.headers["ratelimit-remaining"]) == ("100;w=21600", "76;w=21600")


def test_fail_next_429_without_retry_after(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1)
    hub.fail_next(2)
    url = _manifest_url(hub, "latest")
    for _ in range(2):
        resp = http.get(url, headers={"Accept": ACCEPT_ALL}, timeout=5)
        assert resp.status_code == 429
        assert "Retry-After" not in resp.headers
        assert resp.json() == {"errors": [{"code": "TOOMANYREQUESTS", "message": PULL_LIMIT_MESSAGE}]}
    assert http.get(url, headers={"Accept": ACCEPT_ALL}, timeout=5).status_code == 200


def test_fail_next_429_with_retry_after_and_recorded_times(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1)
    hub.fail_next(1, retry_after="1")
    url = _manifest_url(hub, "latest")
    first = http.head(url, headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert first.status_code == 429 and first.headers["Retry-After"] == "1" and first.content == b""
    assert http.head(url, headers={"Accept": ACCEPT_ALL}, timeout=5).status_code == 200
    (t1, m1, p1, h1), (t2, *_) = hub.requests
    assert (m1, p1) == ("HEAD", f"/v2/{REPO}/manifests/latest")
    assert h1["accept"] == h1["Accept"] == ACCEPT_ALL and "ACCEPT" in h1
    assert t2 >= t1
    assert hub.count(method="HEAD", path_prefix=f"/v2/{REPO}/manifests/") == 2
    assert hub.count(method="GET") == 0 and hub.count() == 2


def test_fail_next_is_per_kind_and_5xx_is_plain_text(hub: FakeHub, http: requests.Session) -> None:
    hub.set_tag(REPO, "latest", D1)
    hub.fail_next(1, status=503, kind="tags")
    manifest = http.get(_manifest_url(hub, "latest"), headers={"Accept": ACCEPT_ALL}, timeout=5)
    assert manifest.status_code == 200
    tags = http.get(f"{hub.base}/v2/{REPO}/tags/list", timeout=5)
    assert tags.status_code == 503 and tags.headers["Content-Type"].startswith("text/plain")
    assert tags.text == "503 Service Unavailable\n"
    hub.fail_next(1, status=429, body="Too Many Requests (HAP429).\n", kind="any")
    abuse = http.get(f"{hub.base}/v2/", timeout=5)
    assert abuse.status_code == 429 and abuse.text == "Too Many Requests (HAP429).\n"
    assert http.get(f"{hub.base}/v2/{REPO}/tags/list", timeout=5).json()["tags"] == ["latest"]
    with pytest.raises(ValueError, match="bad fault"):
        hub.fail_next(0)


def test_token_challenge_flow(http: requests.Session) -> None:
    with FakeHub(require_token=True) as hub:
        hub.set_tag(REPO, "latest", D1)
        hub.set_tag("other/repo", "latest", D2)
        url, accept = _manifest_url(hub, "latest"), {"Accept": ACCEPT_ALL}

        ping = http.get(f"{hub.base}/v2/", timeout=5)
        assert ping.status_code == 401
        assert _challenge(ping) == {"realm": f"{hub.base}/token", "service": "registry.docker.io"}

        denied = http.get(url, headers=accept, timeout=5)
        assert denied.status_code == 401
        assert denied.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        params = _challenge(denied)
        assert params == {
            "realm": f"{hub.base}/token",
            "service": "registry.docker.io",
            "scope": f"repository:{REPO}:pull",
        }
        assert denied.json() == {
            "errors": [
                {
                    "code": "UNAUTHORIZED",
                    "message": "access to the requested resource is not authorized",
                    "detail": [{"Type": "repository", "Name": REPO, "Action": "pull"}],
                }
            ]
        }
        assert http.head(url, headers=accept, timeout=5).content == b""

        issued = http.get(params["realm"], params={"service": params["service"], "scope": params["scope"]}, timeout=5)
        assert issued.status_code == 200
        body = issued.json()
        assert set(body) == {"token", "expires_in"} and body["expires_in"] == 300
        assert hub.tokens_issued == 1
        auth = {**accept, "Authorization": f"Bearer {body['token']}"}
        ok = http.head(url, headers=auth, timeout=5)
        assert ok.status_code == 200 and ok.headers["Docker-Content-Digest"] == D1
        assert http.get(f"{hub.base}/v2/", headers=auth, timeout=5).status_code == 200

        other = http.head(_manifest_url(hub, "latest", "other/repo"), headers=auth, timeout=5)
        assert other.status_code == 401 and _challenge(other)["error"] == "insufficient_scope"
        garbage = http.head(url, headers={**accept, "Authorization": "Bearer nope"}, timeout=5)
        assert garbage.status_code == 401 and _challenge(garbage)["error"] == "invalid_token"
        hub.expire_tokens()
        expired = http.head(url, headers=auth, timeout=5)
        assert expired.status_code == 401 and _challenge(expired)["error"] == "invalid_token"
        assert "Authorization" in hub.requests[-1].headers


def test_token_for_an_unknown_repo_still_ends_in_401(http: requests.Session) -> None:
    with FakeHub(require_token=True) as hub:
        scope = "repository:no/such:pull"
        issued = http.get(f"{hub.base}/token", params={"service": "registry.docker.io", "scope": scope}, timeout=5)
        assert issued.status_code == 200  # a token with no access, as token.md says
        auth = {"Authorization": f"Bearer {issued.json()['token']}"}
        resp = http.get(f"{hub.base}/v2/no/such/tags/list", headers=auth, timeout=5)
        assert resp.status_code == 401 and _challenge(resp)["error"] == "insufficient_scope"
        wrong = http.get(f"{hub.base}/token", params={"service": "elsewhere", "scope": scope}, timeout=5)
        assert wrong.status_code == 400


def test_set_tag_rejects_a_malformed_digest(hub: FakeHub) -> None:
    with pytest.raises(ValueError, match="not a sha256 digest"):
        hub.set_tag(REPO, "latest", "sha256:abc")


def test_absolute_links_point_at_link_base(hub: FakeHub, http: requests.Session) -> None:
    hub.page_size = 1
    hub.set_tag(REPO, "a", D1)
    hub.set_tag(REPO, "b", D2)
    hub.link_base = "http://other.test:5000"
    resp = http.get(f"{hub.base}/v2/{REPO}/tags/list", timeout=5)
    assert resp.headers["Link"] == f'<http://other.test:5000/v2/{REPO}/tags/list?last=a&n=1>; rel="next"'


def test_redirect_next_answers_a_307_to_the_other_base_after_auth(http: requests.Session) -> None:
    with FakeHub(require_token=True) as first, FakeHub() as second:
        first.set_tag(REPO, "latest", D1)
        second.set_tag(REPO, "latest", D2)
        first.redirect_next(1, f"{second.base}/")
        url = f"{_manifest_url(first, 'latest')}?x=1"
        assert http.head(url, headers={"Accept": ACCEPT_ALL}, timeout=5).status_code == 401  # auth comes first
        issued = http.get(
            f"{first.base}/token",
            params={"service": "registry.docker.io", "scope": f"repository:{REPO}:pull"},
            timeout=5,
        )
        auth = {"Accept": ACCEPT_ALL, "Authorization": f"Bearer {issued.json()['token']}"}
        moved = http.get(url, headers=auth, allow_redirects=False, timeout=5)
        assert moved.status_code == 307
        assert moved.headers["Location"] == f"{second.base}/v2/{REPO}/manifests/latest?x=1"
        assert moved.headers["Content-Type"] == "text/html; charset=utf-8"
        assert http.head(url, headers=auth, timeout=5).headers["Docker-Content-Digest"] == D1  # only the next one
        with pytest.raises(ValueError, match="bad redirect"):
            first.redirect_next(1, second.base, status=200)
    assert second.requests == []  # the fake only answers the redirect; following it is the client's business

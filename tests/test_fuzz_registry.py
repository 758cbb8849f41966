"""Fuzz tests of the registry boundary: whatever a registry or its token server answers, `digest` and `tags`
return a valid digest or valid tags, or raise one `RegistryError` of one line that holds no credential.

The real client talks real HTTP to the fake hub, which serves the generated answers exactly (`answer_next`):
status, tag-list and error bodies, `ratelimit-remaining`, `Link`, `Location`, `Docker-Content-Digest`,
`WWW-Authenticate`, and the token server's body. Sessions do not retry, so no test waits for a back-off or a
`Retry-After` (the one test that retries sends a Retry-After urllib3 fails to read before it would wait). Each
crash the first fuzz run found is kept as an `@example`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler import clients, errors, model
from reconciler.registry import auth, client
from reconciler.registry.credentials import Credentials
from tests.fakes.hub import SERVICE, FakeHub, Kind
from tests.support import fuzzing

IMAGE = model.ImageRef.parse("xchem/fragalysis-stack")
REPO = IMAGE.repository
DIGEST = "sha256:" + "d" * 64
ALICE = Credentials("alice", "pw-Zq9-s3cret")
BASIC = base64.b64encode(b"alice:pw-Zq9-s3cret").decode()
TOKEN_MARK = "tok-Zq9x"  # in every distinctive token the fake token server sends: must never be shown
HUB = "{hub}"  # stands for the fake hub's base URL in generated headers, filled in when served
NESTING = 2000  # deeper than Python's JSON parser goes (its recursion limit is 1,000)
TOKEN_PATH = f"/token?service={SERVICE}&scope=repository:{REPO}:pull"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


@dataclass
class Answer:
    """One HTTP answer to serve: `HUB` in a str header value becomes the hub's base URL."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str | bytes] = field(default_factory=dict)


# --- what a registry may send ----------------------------------------------------------------------------------

header_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)
header_values = st.one_of(header_text, st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b))
tag_names = st.one_of(st.sampled_from(["1.0.0", "latest", "v2", "2.0.0-rc.1", "_x", "a" * 129]), fuzzing.weird_text)
tag_list_bodies = st.one_of(
    st.lists(tag_names, max_size=6).map(lambda tags: fuzzing.body({"name": REPO, "tags": tags})),
    fuzzing.json_values.map(lambda tags: fuzzing.body({"name": REPO, "tags": tags})),
)
error_bodies = st.builds(
    lambda code, message, detail: fuzzing.body({"errors": [{"code": code, "message": message, "detail": detail}]}),
    fuzzing.json_values,
    fuzzing.json_values,
    fuzzing.json_values,
)
bodies = st.one_of(tag_list_bodies, error_bodies, fuzzing.broken_bodies)
ratelimits = st.one_of(
    st.sampled_from(
        [
            *("100;w=21600", "0;w=21600", " 7 ; w=21600 ", "9" * 12 + ";w=1", "9" * 13 + ";w=1", "-1;w=1"),
            *("1e3;w=1", "٣;w=21600", "9" * 5000 + ";w=21600", "1;w=" + "9" * 5000, ""),
        ]
    ),
    header_values,
)
links = st.one_of(
    st.sampled_from(
        [
            f'</v2/{REPO}/tags/list?last=1.0.0&n=2>; rel="next"',
            f'</v2/{REPO}/tags/list>; rel="next"',  # the first page again: a list that never ends
            f'<{HUB}/v2/{REPO}/tags/list?n=1>; rel="next"',
            '<http://[>; rel="next"',
            '<http://[::1>; rel="next"',
            '<http://127.0.0.1:99999/v2/>; rel="next"',
            '<http://127.0.0.1:1/v2/>; rel="next"',  # another origin: refused before anything is sent
            '<//elsewhere.invalid/v2/>; rel="next"',
            '</v2/ü>; rel="next"',
            '<>; rel="next"',
            'rel="next"',
        ]
    ),
    header_text.map(lambda t: f'</v2/{REPO}/tags/list?{t}>; rel="next"'),
    header_values,
)
# Locations never name a host outside loopback (no DNS look-up): relative, this hub, or a closed port.
_LOCATIONS: list[str | bytes] = [
    "http://[",
    "http://[::1",
    "/v2/ü",
    b"/v2/\xff\xfe",  # not UTF-8
    "http://127.0.0.1:1/v2/",
    "http://127.0.0.1:99999/v2/",
    "http:///v2/",
    "ftp://127.0.0.1/v2/",
    "",
    "\x00",
    f"{HUB}/v2/{REPO}/manifests/latest",
    f"/v2/{REPO}/tags/list",
    f"/v2/{REPO}/manifests/latest",
]
locations = st.one_of(st.sampled_from(_LOCATIONS), header_text.map(lambda t: f"/v2/{t}"))
digests = st.one_of(
    st.sampled_from([DIGEST, "sha256:" + "D" * 64, "sha256:xyz", "", f"{DIGEST} ", "sha512:" + "d" * 128]),
    header_values,
)
challenges = st.one_of(
    st.sampled_from(
        [
            f'Bearer realm="{HUB}/token",service="{SERVICE}",scope="repository:{REPO}:pull"',
            f'Bearer realm="{HUB}/token"',
            'Bearer realm="http://["',
            'Bearer realm="http://127.0.0.1:1/token",service="x"',
            'Bearer realm="/token"',
            'Basic realm="registry"',
            "Bearer",
            "Negotiate",
        ]
    ),
    header_values,
)
content_types = st.sampled_from(
    ["application/json", "text/plain; charset=bogus", "application/json; charset=utf-16", "text/html", "x"]
)
STATUSES = [200, 200, 200, 203, 206, 204, 301, 302, 303, 307, 308, 400, 401, 403, 404, 405, 429, 500, 503, 599]


@st.composite
def answers(draw: st.DrawFn, bodies: st.SearchStrategy[bytes] = bodies) -> Answer:
    status = draw(st.sampled_from(STATUSES))
    headers: dict[str, str | bytes] = {}
    optional: dict[str, st.SearchStrategy[str | bytes]] = {
        "Content-Type": content_types,
        "ratelimit-remaining": ratelimits,
        "Link": links,
        "Docker-Content-Digest": digests,
        "Retry-After": st.sampled_from(["0", "", "soon", "9" * 5000, "-1"]),  # never waited for: no retries
    }
    for name, values in optional.items():
        if draw(st.booleans()):
            headers[name] = draw(values)
    if 300 <= status < 400 and draw(st.integers(0, 4)):
        headers["Location"] = draw(locations)
    if status == 401 and draw(st.integers(0, 4)):
        headers["WWW-Authenticate"] = draw(challenges)
    return Answer(status, draw(bodies), headers)


token_strings = st.one_of(
    st.sampled_from([TOKEN_MARK, f"{TOKEN_MARK}-ü", f"{TOKEN_MARK}€", f"{TOKEN_MARK}\n", f" {TOKEN_MARK}"]),
    st.sampled_from([f"{TOKEN_MARK} x", f"{TOKEN_MARK}\x00", f"{TOKEN_MARK}\x7f", TOKEN_MARK * 5000, ""]),
    fuzzing.json_values,
)
lifetimes = st.one_of(
    fuzzing.huge_numbers, fuzzing.json_values, st.sampled_from(["300", "9" * 13, "1e999", "nan", 10**400, True])
)


@st.composite
def token_bodies(draw: st.DrawFn) -> bytes:
    fields: dict[str, st.SearchStrategy[object]] = {
        "token": token_strings,
        "access_token": token_strings,
        "expires_in": lifetimes,
        "issued_at": st.one_of(st.sampled_from(["2009-11-10T23:00:00Z", "yesterday", ""]), fuzzing.json_values),
    }
    return fuzzing.body({name: draw(values) for name, values in fields.items() if draw(st.booleans())})


@st.composite
def token_answers(draw: st.DrawFn) -> Answer:
    status = draw(st.sampled_from([200, 200, 200, 200, 201, 204, 302, 307, 400, 401, 403, 404, 500, 503]))
    body = draw(st.one_of(token_bodies(), fuzzing.broken_bodies))
    headers: dict[str, str | bytes] = {}
    if draw(st.booleans()):
        headers["Content-Type"] = draw(content_types)
    if 300 <= status < 400:
        headers["Location"] = draw(st.one_of(st.just(TOKEN_PATH), locations))  # the real token, or a bad one
    return Answer(status, body, headers)


# --- the harness ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    """A hub without token auth: a generated 401 starts the token flow on the hub's own token server."""
    with FakeHub(page_size=2) as fake:
        for tag in ("1.0.0", "latest", "2.0.0"):
            fake.set_tag(REPO, tag, DIGEST)
        yield fake


@pytest.fixture(scope="module")
def token_hub() -> Iterator[FakeHub]:
    """A hub that wants a token it issued: a generated token answer ends in a 401, a redirect to it in a digest."""
    with FakeHub(require_token=True) as fake:
        fake.set_tag(REPO, "latest", DIGEST)
        yield fake


def _serve(hub: FakeHub, kind: Kind, answer: Answer) -> None:
    headers = {k: v.replace(HUB, hub.base) if isinstance(v, str) else v for k, v in answer.headers.items()}
    hub.answer_next(1, kind=kind, status=answer.status, body=answer.body, headers=headers)


def _client(hub: FakeHub, credentials: Credentials | None) -> client.RegistryClient:
    session = clients.registry_session(retries=0)  # no retry: nothing ever waits for a back-off or Retry-After
    authenticator = auth.Authenticator(session=session, credentials=lambda _: credentials, timeout=5)
    return client.RegistryClient(session=session, authenticator=authenticator, urls={"docker.io": hub.base}, timeout=5)


def _secrets(hub: FakeHub, since: int) -> list[str]:
    """Our password, its Basic form, and every bearer token sent in this example (all credentials)."""
    sent = [r.headers.get("authorization") or "" for r in hub.requests[since:]]
    tokens = [h.removeprefix("Bearer ") for h in sent if h.startswith("Bearer ") and len(h) > 20]
    return [ALICE.password, BASIC, TOKEN_MARK, *tokens]


def _check(reg: client.RegistryClient, hub: FakeHub, op: str, since: int) -> str:
    """Run `op` and check the contract; the outcome, for the examples that pin one."""
    try:
        if op == "digest":
            found = reg.digest(IMAGE, "latest")
            assert _DIGEST.fullmatch(found), found
        else:
            tags = reg.tags(IMAGE)
            assert all(model.check_tag(t) == t for t in tags), tags
    except errors.RegistryError as exc:
        message = str(exc)
        assert fuzzing.one_line(message), message
        assert len(message) < 1000, message
        message.encode()  # no lone surrogate that a UTF-8 log stream would choke on
        shown = [s for s in _secrets(hub, since) if s in message]
        assert not shown, message
        outcome = message
    else:
        outcome = "ok"
    assert all(0 <= n < 10**12 for n in reg.ratelimit_remaining.values()), reg.ratelimit_remaining
    return outcome


# --- the properties ------------------------------------------------------------------------------------------------

NESTED_LIST = fuzzing.nested(NESTING).encode()
NESTED_TAGS = b'{"name":"x","tags":' + NESTED_LIST + b"}"
NESTED_ERROR = b'{"errors":[{"code":"X","message":"m","detail":' + NESTED_LIST + b"}]}"


@fuzzing.examples(150)
@given(
    op=st.sampled_from(["digest", "tags"]),
    replies=st.lists(answers(), min_size=1, max_size=3),
    credentials=st.booleans(),
)
@example(op="tags", replies=[Answer(200, NESTED_TAGS)], credentials=False)
@example(op="tags", replies=[Answer(200, NESTED_LIST)], credentials=False)
@example(op="tags", replies=[Answer(500, NESTED_ERROR)], credentials=False)
@example(op="tags", replies=[Answer(404, fuzzing.nested(NESTING, opener="{").encode())], credentials=False)
@example(
    op="digest", replies=[Answer(200, headers={"ratelimit-remaining": "9" * 5000 + ";w=21600"})], credentials=False
)
@example(
    op="tags", replies=[Answer(200, b'{"tags":[]}', {"ratelimit-remaining": "9" * 400 + ";w=1"})], credentials=False
)
@example(op="digest", replies=[Answer(307, headers={"Location": "http://["})], credentials=True)
@example(op="tags", replies=[Answer(200, b'{"tags":["1.0.0"]}', {"Link": '<http://[>; rel="next"'})], credentials=True)
@example(op="digest", replies=[Answer(302, headers={"Location": "/v2/ü/manifests/latest"})], credentials=False)
@example(op="digest", replies=[Answer(302, headers={"Location": b"/v2/\xe9\xff/manifests/latest"})], credentials=False)
@example(op="digest", replies=[Answer(307, headers={"Location": "http://127.0.0.1:99999/v2/"})], credentials=True)
@example(op="tags", replies=[Answer(500, b'{"errors":[{"message":"line one\\nline two\\ud800"}]}')], credentials=False)
@example(
    op="digest",
    replies=[Answer(401, headers={"WWW-Authenticate": 'Basic realm="r"'}), Answer(500, b"\xff\n" + b"x" * 5000)],
    credentials=True,
)
def test_any_registry_answer_gives_a_result_or_one_registry_error(
    hub: FakeHub, op: str, replies: list[Answer], credentials: bool
) -> None:
    hub.clear_faults()
    since = len(hub.requests)
    for reply in replies:
        _serve(hub, "any", reply)
    _check(_client(hub, ALICE if credentials else None), hub, op, since)


@fuzzing.examples(60)
@given(reply=token_answers(), credentials=st.booleans())
@example(reply=Answer(200, NESTED_LIST), credentials=False)
@example(
    reply=Answer(200, b'{"token":"' + TOKEN_MARK.encode() + b'","expires_in":' + NESTED_LIST + b"}"), credentials=False
)
@example(reply=Answer(200, b'{"token":"tok-Zq9x","expires_in":' + b"9" * 5000 + b"}"), credentials=True)
@example(reply=Answer(200, b'{"token":"tok-Zq9x","expires_in":' + b"9" * 400 + b"}"), credentials=True)
@example(reply=Answer(200, '{"token":"tok-Zq9x-ü"}'.encode()), credentials=True)
@example(reply=Answer(200, b'{"token":"tok-Zq9x\\u20ac"}'), credentials=True)
@example(reply=Answer(200, b'{"token":"tok-Zq9x\\n"}'), credentials=True)
@example(reply=Answer(302, headers={"Location": "http://["}), credentials=True)
@example(reply=Answer(302, headers={"Location": b"/token\xff"}), credentials=True)
@example(reply=Answer(302, headers={"Location": TOKEN_PATH}), credentials=False)
def test_any_token_server_answer_gives_a_result_or_one_registry_error(
    token_hub: FakeHub, reply: Answer, credentials: bool
) -> None:
    token_hub.clear_faults()
    since = len(token_hub.requests)
    _serve(token_hub, "token", reply)
    _check(_client(token_hub, ALICE if credentials else None), token_hub, "digest", since)


# --- what each crash of the first fuzz run is now -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "reply", "expected"),
    [
        ("tags", Answer(200, NESTED_TAGS), "sent a malformed tag list for docker.io/xchem/fragalysis-stack"),
        ("tags", Answer(503, NESTED_ERROR), "answered 503 for the tags of docker.io/xchem/fragalysis-stack: "),
        ("digest", Answer(307, headers={"Location": "http://["}), "redirected docker.io/xchem/fragalysis-stack:latest"),
        ("digest", Answer(307, headers={"Location": b"/v2/\xe9"}), "to a Location that cannot be followed"),
        (
            "tags",
            Answer(200, b'{"tags":[]}', {"Link": '<http://[>; rel="next"'}),
            "next-page link for the tags of docker.io/xchem/fragalysis-stack that cannot be read",
        ),
        ("tags", Answer(500, b'{"errors":[{"message":"one\\ntwo"}]}'), "answered 500 for the tags of"),
    ],
)
def test_each_crash_found_by_fuzzing_is_a_registry_error_that_says_what_was_wrong(
    hub: FakeHub, op: str, reply: Answer, expected: str
) -> None:
    hub.clear_faults()
    _serve(hub, "any", reply)
    outcome = _check(_client(hub, None), hub, op, len(hub.requests))
    assert outcome.startswith("registry docker.io ") and expected in outcome, outcome


def test_a_ratelimit_count_of_thousands_of_digits_is_no_count(hub: FakeHub) -> None:
    hub.clear_faults()
    reg = _client(hub, None)
    _serve(hub, "any", Answer(200, headers={"Docker-Content-Digest": DIGEST, "ratelimit-remaining": "12;w=21600"}))
    assert reg.digest(IMAGE, "latest") == DIGEST
    assert reg.ratelimit_remaining == {"docker.io": 12}
    _serve(hub, "any", Answer(200, headers={"Docker-Content-Digest": DIGEST, "ratelimit-remaining": "9" * 5000}))
    assert reg.digest(IMAGE, "latest") == DIGEST
    assert reg.ratelimit_remaining == {}  # unreadable counts as absent: unlimited, as without the header


@pytest.mark.parametrize("retry_after", ["9" * 5000, "soon"])
def test_an_unreadable_retry_after_on_a_retried_429_is_a_registry_error(hub: FakeHub, retry_after: str) -> None:
    """The one answer urllib3 reads itself, while retrying: it raises before it would wait, so nothing sleeps."""
    hub.clear_faults()
    session = clients.registry_session(retries=1, backoff=0)
    authenticator = auth.Authenticator(session=session, credentials=lambda _: None, timeout=5)
    reg = client.RegistryClient(session=session, authenticator=authenticator, urls={"docker.io": hub.base}, timeout=5)
    _serve(hub, "any", Answer(429, headers={"Retry-After": retry_after}))
    outcome = _check(reg, hub, "digest", len(hub.requests))
    assert outcome.startswith(("registry docker.io ", "cannot reach registry docker.io ")), outcome


@pytest.mark.parametrize(
    "token", [f"{TOKEN_MARK}-ü", f"{TOKEN_MARK}€", f"{TOKEN_MARK}\n", f"{TOKEN_MARK} x", TOKEN_MARK * 10_000]
)
def test_a_token_that_is_not_printable_ascii_is_refused_and_never_sent(token_hub: FakeHub, token: str) -> None:
    token_hub.clear_faults()
    since = len(token_hub.requests)
    _serve(token_hub, "token", Answer(200, fuzzing.body({"token": token})))
    outcome = _check(_client(token_hub, ALICE), token_hub, "digest", since)
    assert "sent an unusable token for docker.io/xchem/fragalysis-stack" in outcome, outcome
    sent = [r.headers.get("authorization") or "" for r in token_hub.requests[since:]]
    assert not any(TOKEN_MARK in h for h in sent)


@pytest.mark.parametrize(
    ("expires_in", "lifetime"),
    [
        (b"120", 120.0),
        (b'"120"', 120.0),
        (b"9" * 400, auth.MAX_TOKEN_LIFETIME),
        (b"1e999", auth.MAX_TOKEN_LIFETIME),
        (b"9" * 13, auth.MAX_TOKEN_LIFETIME),
        (b"0", auth.DEFAULT_TOKEN_LIFETIME),
        (b"-5", auth.DEFAULT_TOKEN_LIFETIME),
        (b"NaN", auth.DEFAULT_TOKEN_LIFETIME),
        (b"true", auth.DEFAULT_TOKEN_LIFETIME),
        (b'"soon"', auth.DEFAULT_TOKEN_LIFETIME),
        (b'"' + b"9" * 5000 + b'"', auth.DEFAULT_TOKEN_LIFETIME),
        (b"[]", auth.DEFAULT_TOKEN_LIFETIME),
    ],
)
def test_a_token_lifetime_is_clamped_and_an_unreadable_one_is_the_default(
    token_hub: FakeHub, expires_in: bytes, lifetime: float
) -> None:
    token_hub.clear_faults()
    _serve(token_hub, "token", Answer(200, b'{"token":"tok-1","expires_in":' + expires_in + b"}"))
    now = [1000.0]
    session = clients.registry_session(retries=0)
    authenticator = auth.Authenticator(session=session, credentials=lambda _: None, clock=lambda: now[0], timeout=5)
    scope = f"repository:{REPO}:pull"
    challenge = f'Bearer realm="{token_hub.base}/token",service="{SERVICE}"'
    header = authenticator.answer(registry="docker.io", header=challenge, scope=scope, image=str(IMAGE))
    assert header == {"Authorization": "Bearer tok-1"}
    now[0] = 1000.0 + lifetime - auth.TOKEN_MARGIN - 0.5
    assert authenticator.cached_header("docker.io", scope) == header
    now[0] += 1.0
    assert authenticator.cached_header("docker.io", scope) == {}

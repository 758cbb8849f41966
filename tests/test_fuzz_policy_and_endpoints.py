"""Property-based fuzzing of two small boundaries: the release policy (any tags a registry lists, any rule a
configuration gives) and the daemon's endpoints (any request, any webhook body): only our errors, one line, and
never a 500. Every crash a fuzz run once found is kept as an `@example`."""

from __future__ import annotations

import io
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from reconciler import endpoints, errors, model, policy
from tests.support import fuzzing

tags = st.one_of(
    st.from_regex(r"\A[0-9]{1,30}\.[0-9]{1,30}\.[0-9]{1,30}\Z"),
    st.from_regex(r"\Av?[0-9]{1,4}(\.[0-9]{1,4}){0,3}(-rc\.[0-9])?\Z"),
    fuzzing.weird_text,
)
patterns = st.one_of(
    st.sampled_from([model.RELEASE_PATTERN, r"^v?\d+\.\d+\.\d+$", "(", "a{4294967296}"]), fuzzing.texts
)
ranges = st.one_of(
    st.none(),
    st.sampled_from([">=2026.1.0,<2027", ">=1" + "0" * 5000, "==1.*", "~=1.2", "<<1"]),
    fuzzing.texts,
)


@fuzzing.examples(150)
@given(listed=st.lists(tags, max_size=12), pattern=patterns, version_range=ranges)
@example(listed=["1.0." + "9" * 4301, "1.0.2"], pattern=model.RELEASE_PATTERN, version_range=None)
@example(listed=["2026.08.3\n"], pattern=model.RELEASE_PATTERN, version_range=None)
@example(listed=["1.0.0"], pattern=model.RELEASE_PATTERN, version_range=">=1" + "0" * 5000)
@example(listed=["1.0.0"], pattern="a{4294967296}", version_range=None)
def test_the_release_policy_picks_a_listed_tag_or_none_and_a_bad_rule_is_one_config_error(
    listed: list[str], pattern: str, version_range: str | None
) -> None:
    try:
        selector = model.ReleaseSelector(pattern=pattern, range=version_range)
    except errors.ConfigError as exc:
        assert fuzzing.one_line(str(exc))
        return
    chosen = policy.newest(listed, selector)
    assert chosen is None or chosen in listed


class _Callbacks:
    def __init__(self) -> None:
        self.standby = False

    def queue(self, names: Any) -> list[str]:
        if self.standby:
            raise errors.LockHeld("standby: another instance holds the lease")
        for name in names:
            if name != "staging":
                raise errors.ConfigError(f"no watch named {name!r}")
        return list(names) or ["staging"]


def _app(callbacks: _Callbacks) -> endpoints.Endpoints:
    return endpoints.Endpoints(
        callbacks=endpoints.Callbacks(
            alive=lambda: True,
            ready=lambda: (True, "ready"),
            status=lambda: {"watches": []},
            metrics=lambda: b"",
            reconcile=callbacks.queue,
            repository=lambda image: callbacks.queue(["staging"] if image.repository == "xchem/x" else []),
        ),
        token="api-token-secret",
        webhook_secret="hook-secret",
        loopback=True,
    )


methods = st.sampled_from(["GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
paths = st.one_of(
    st.sampled_from(["/healthz", "/readyz", "/metrics", "/status", "/reconcile", "/hooks/dockerhub/hook-secret"]),
    fuzzing.weird_text.map(lambda t: "/" + t),
    fuzzing.weird_text.map(lambda t: "/hooks/dockerhub/" + t),
)
bodies = st.one_of(
    fuzzing.broken_bodies,
    st.sampled_from([b'{"repository": {"repo_name": "xchem/x"}}', b'{"repository": {"repo_name": 5}}']),
)


@fuzzing.examples(200)
@given(
    method=methods,
    path=paths,
    query=fuzzing.weird_text,
    body=bodies,
    length=st.one_of(st.none(), st.sampled_from(["²", "-1", "99999999999", "abc", ""]), st.integers(0, 70000).map(str)),
    authorization=st.one_of(
        st.none(), st.sampled_from(["Bearer api-token-secret", "Bearer x", "Basic"]), fuzzing.texts
    ),
    standby=st.booleans(),
)
@example(
    method="POST",
    path="/hooks/dockerhub/hook-secret",
    query="",
    body=b"[" * 3000,  # under the size limit, deeper than the parser survives: was a 500
    length="3000",
    authorization=None,
    standby=False,
)
@example(
    method="POST",
    path="/hooks/dockerhub/hook-secret",
    query="",
    body=b"{}",
    length="²",
    authorization=None,
    standby=False,
)
def test_no_request_gets_a_500(
    method: str, path: str, query: str, body: bytes, length: str | None, authorization: str | None, standby: bool
) -> None:
    callbacks = _Callbacks()
    callbacks.standby = standby
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "wsgi.input": io.BytesIO(body),
    }
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    answered: list[str] = []
    chunks = _app(callbacks)(environ, lambda status, headers: answered.append(status))
    assert answered and not answered[0].startswith("500"), (answered, b"".join(chunks))
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "api-token-secret" not in text and "hook-secret" not in text

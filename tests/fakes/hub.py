"""A fake of the Docker Hub registry behaviours that distribution 2.8.2 lacks, in-process on 127.0.0.1.

Owns exactly what `docker-registry` 2.8.2 cannot show, as the OCI distribution-spec, distribution's docs and
Docker Hub's documentation describe it:
* `tags/list` paging: repository-internal (insertion) order, never sorted; `n` clamped to `page_size`; a
  relative `Link: </v2/<name>/tags/list?last=<tag>&n=<n>>; rel="next"` with url-encoded, sorted keys as distribution
  v3 builds it, or with `opaque_cursor=True` a `?next_page=<token>&n=<n>` cursor as other registries send;
  `link_base` makes the Link absolute (other registries send absolute ones), on any origin a test names.
* Pull limits: `ratelimit-limit`/`ratelimit-remaining: <x>;w=21600` and `docker-ratelimit-source` on
  manifest responses; GET counts a pull and HEAD does not; an exhausted limit answers GET with the 429 pull-limit body.
* Fault injection: 429 with or without `Retry-After`, and 5xx, for the next N requests of a kind; a 307 to
  another base URL (as a registry behind a proxy or moved to a new host answers) with `redirect_next`; and, for
  the fuzz tests, any status, headers (raw bytes too) and body at all with `answer_next`.
* The Hub token flow: 401 challenges with `error="invalid_token"`/`"insufficient_scope"` and `GET /token`.
  Tokens grant pull only on repositories that exist when issued, so an unknown repository ends in 401, as on Hub.
* Manifest HEAD/GET: `Accept` negotiation as in distribution (an OCI index or manifest not accepted →
  404 MANIFEST_UNKNOWN; a Docker list with only v2s2 accepted → a *different* "platform" digest; otherwise 400
  MANIFEST_INVALID), and the OCI error envelope; HEAD sends Content-Length with no body.
Assumptions (not confirmed from a source): the exact TOOMANYREQUESTS JSON, `{"token", "expires_in": 300}` as
the token body, the 400 bodies for a wrong `service` or an unknown `next_page` cursor, and what `last=<unknown tag>`
does (empty page here). The fake does not serve real bytes: a manifest GET body is deterministic JSON whose
sha256 is NOT the `Docker-Content-Digest`.
Must not: know anything about `reconciler`, or fake what the real registry in tests/support/ already covers.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.loopback import LoopbackServer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_V2 = "application/vnd.docker.distribution.manifest.v2+json"
SERVICE = "registry.docker.io"
WINDOW = 21600
PULL_LIMIT_MESSAGE = (
    "You have reached your pull rate limit. You may increase the limit by authenticating and upgrading: "
    "https://www.docker.com/increase-rate-limits"
)
Kind = Literal["manifest", "tags", "token", "any"]
_KINDS = ("manifest", "tags", "token", "any")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_MANIFEST_RE = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_TAGS_RE = re.compile(r"^/v2/(?P<name>.+)/tags/list$")
_JSON = "application/json; charset=utf-8"
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
_FRAMING = {"content-length", "transfer-encoding", "connection"}
_OCI_UNACCEPTED = {
    OCI_INDEX: "OCI index found, but accept header does not support OCI indexes",
    OCI_MANIFEST: "OCI manifest found, but accept header does not support OCI manifests",
}


class Headers(dict[str, str]):
    """Recorded request headers: keys are stored lower-cased and every lookup ignores case."""

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


class Recorded(NamedTuple):
    time: float  # time.monotonic() on arrival
    method: str
    path: str  # with the query string
    headers: Headers


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Fault:
    count: int
    status: int
    retry_after: str | None
    body: bytes | str | Mapping[str, Any] | None
    kind: Kind
    location: str | None = None  # a redirect: base URL the request's path and query are sent on to
    raw: _Reply | None = None  # `answer_next`: sent exactly as given


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Reply:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Reply(status, body, {"Content-Type": _JSON, **(headers or {})})


def _error(status: int, code: str, message: str, detail: Any = None, hdrs: Mapping[str, str] | None = None) -> _Reply:
    entry: dict[str, object] = {"code": code, "message": message}
    if detail is not None:
        entry["detail"] = detail
    return _json(status, {"errors": [entry]}, hdrs)


class FakeHub:
    """Docker Hub's registry (`registry-1.docker.io` + `auth.docker.io/token`) as far as 2.8.2 cannot show it."""

    def __init__(
        self,
        *,
        page_size: int = 100,
        opaque_cursor: bool = False,
        require_token: bool = False,
        ratelimit: int | None = None,
        token_expires_in: int = 300,
    ) -> None:
        self.page_size = page_size
        self.opaque_cursor = opaque_cursor
        self.require_token = require_token
        self.token_expires_in = token_expires_in
        self.requests: list[Recorded] = []  # append-only; list.append is atomic, read a copy under `lock` if racing
        self.tokens_issued = 0
        self.lock = threading.Lock()
        self._repos: dict[str, dict[str, tuple[str, str]]] = {}  # name -> tag -> (digest, media type), insertion order
        self._faults: list[_Fault] = []
        self._tokens: dict[str, tuple[frozenset[str], float]] = {}  # token -> (pullable repos, monotonic expiry)
        self._cursors: dict[str, tuple[str, str]] = {}  # next_page token -> (repo, last tag of the previous page)
        self._limit = ratelimit
        self._remaining = ratelimit or 0
        self._http = LoopbackServer(_Handler, owner=self, name="fake-hub")
        self.base = ""
        self.link_base = ""  # "" sends relative `Link`s; "http://host:port" absolute ones on that origin

    def start(self) -> FakeHub:
        self.base = self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def set_tag(self, repo: str, tag: str, digest: str, media_type: str = OCI_INDEX) -> None:
        """Point `repo:tag` at `digest` (creating the repo); a re-pushed tag keeps its place in the listing order."""
        if not _DIGEST_RE.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        with self.lock:
            self._repos.setdefault(repo, {})[tag] = (digest, media_type)

    def delete_tag(self, repo: str, tag: str) -> None:
        with self.lock:
            del self._repos[repo][tag]

    def set_ratelimit(self, limit: int | None, remaining: int | None = None) -> None:
        """Send pull-limit headers (None: no headers, unlimited); `remaining` defaults to `limit`."""
        with self.lock:
            self._limit = limit
            self._remaining = (limit if remaining is None else remaining) or 0

    def fail_next(
        self,
        count: int,
        status: int = 429,
        retry_after: str | None = None,
        body: bytes | str | Mapping[str, Any] | None = None,
        kind: Kind = "manifest",
    ) -> None:
        """Answer the next `count` requests of `kind` that pass auth with `status`. "any": every /v2/ request."""
        if count < 1 or kind not in _KINDS:
            raise ValueError(f"bad fault: count={count} kind={kind!r}")
        with self.lock:
            self._faults.append(_Fault(count, status, retry_after, body, kind))

    def redirect_next(self, count: int, to: str, kind: Kind = "manifest", status: int = 307) -> None:
        """Send the next `count` requests of `kind` that pass auth on to `to` + their path and query."""
        if count < 1 or kind not in _KINDS or status not in (301, 302, 303, 307, 308):
            raise ValueError(f"bad redirect: count={count} kind={kind!r} status={status}")
        with self.lock:
            self._faults.append(_Fault(count, status, None, None, kind, location=to.rstrip("/")))

    def answer_next(
        self,
        count: int,
        *,
        kind: Kind,
        status: int,
        body: bytes = b"",
        headers: Mapping[str, str | bytes] | None = None,
    ) -> None:
        """Answer the next `count` requests of `kind` that pass auth with exactly this status, headers and body,
        however malformed: a registry or token server gone wrong, for the fuzz tests.

        A str header value is sent as UTF-8 and a bytes one as it is, so a value may be anything a server can put
        on the wire but a line break. The fake frames the reply (Content-Length; no body on HEAD, 204 or 304), so
        framing headers and 1xx statuses are refused: they would answer a different request.
        """
        if count < 1 or kind not in _KINDS or not 200 <= status <= 599:
            raise ValueError(f"bad answer: count={count} kind={kind!r} status={status}")
        wire: dict[str, str] = {}
        for key, value in (headers or {}).items():
            raw = value.encode() if isinstance(value, str) else value
            if not _HEADER_NAME.fullmatch(key) or key.lower() in _FRAMING or b"\r" in raw or b"\n" in raw:
                raise ValueError(f"bad header for answer_next: {key!r}: {raw[:40]!r}")
            wire[key] = raw.decode("latin-1")  # send_header encodes latin-1: the bytes go out unchanged
        with self.lock:
            self._faults.append(_Fault(count, status, None, None, kind, raw=_Reply(status, body, wire)))

    def clear_faults(self) -> None:
        """Forget every fault, redirect and answer not yet used up."""
        with self.lock:
            self._faults.clear()

    def expire_tokens(self) -> None:
        """Make every issued token invalid, as if its `expires_in` had passed."""
        with self.lock:
            self._tokens.clear()

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self.lock:
            seen = list(self.requests)
        return sum(1 for r in seen if method in (None, r.method) and r.path.startswith(path_prefix or ""))

    def handle(self, method: str, target: str, headers: Message, client_ip: str) -> _Reply:
        recorded = Recorded(time.monotonic(), method, target, Headers((k.lower(), v) for k, v in headers.items()))
        with self.lock:
            self.requests.append(recorded)
        split = urlsplit(target)
        path, query = split.path, parse_qs(split.query, keep_blank_values=True)
        name: str | None = None
        ref = ""
        kind: str
        if path == "/token":
            kind = "token"
        elif m := _MANIFEST_RE.match(path):
            kind, name, ref = "manifest", m["name"], m["ref"]
        elif m := _TAGS_RE.match(path):
            kind, name = "tags", m["name"]
        elif path == "/v2/":
            kind = "base"
        else:
            return _Reply(404, b"404 page not found\n", {"Content-Type": "text/plain; charset=utf-8"})
        if kind != "token" and self.require_token:
            denied = self._authorise(name, headers.get("Authorization"))
            if denied is not None:
                return denied
        fault = self._take_fault(kind, target)
        if fault is not None:
            return fault
        if kind == "token":
            return self._token(query)
        if kind == "base":
            return _json(200, {})
        assert name is not None
        if kind == "tags":
            return self._tags(name, query)
        accept = {t.split(";")[0].strip() for h in headers.get_all("Accept") or [] for t in h.split(",")}
        return self._manifest(method, name, ref, accept, client_ip)

    def _authorise(self, name: str | None, authorization: str | None) -> _Reply | None:
        challenge = f'Bearer realm="{self.base}/token",service="{SERVICE}"'
        if name is not None:
            challenge += f',scope="repository:{name}:pull"'
        if authorization is not None and authorization.startswith("Bearer "):
            with self.lock:
                grant = self._tokens.get(authorization.removeprefix("Bearer ").strip())
            if grant is None or grant[1] <= time.monotonic():
                challenge += ',error="invalid_token"'
            elif name is None or name in grant[0]:
                return None
            else:
                challenge += ',error="insufficient_scope"'
        if name is None:
            return _error(401, "UNAUTHORIZED", "authentication required", None, {"Www-Authenticate": challenge})
        detail = [{"Type": "repository", "Name": name, "Action": "pull"}]
        message = "access to the requested resource is not authorized"
        return _error(401, "UNAUTHORIZED", message, detail, {"Www-Authenticate": challenge})

    def _take_fault(self, kind: str, target: str) -> _Reply | None:
        with self.lock:
            fault = next((f for f in self._faults if f.kind == kind or (f.kind == "any" and kind != "token")), None)
            if fault is None:
                return None
            fault.count -= 1
            if fault.count == 0:
                self._faults.remove(fault)
        if fault.raw is not None:
            return _Reply(fault.raw.status, fault.raw.body, dict(fault.raw.headers))
        if fault.location is not None:  # what Go's http.Redirect writes
            location = fault.location + target
            body = f'<a href="{location}">{HTTPStatus(fault.status).phrase}</a>.\n\n'.encode()
            return _Reply(fault.status, body, {"Location": location, "Content-Type": "text/html; charset=utf-8"})
        headers = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
        if isinstance(fault.body, Mapping):
            return _json(fault.status, fault.body, headers)
        if fault.body is None and fault.status == 429:
            return _error(429, "TOOMANYREQUESTS", PULL_LIMIT_MESSAGE, None, headers)
        body: bytes | str = (
            fault.body if fault.body is not None else f"{fault.status} {HTTPStatus(fault.status).phrase}\n"
        )
        headers["Content-Type"] = "text/plain; charset=utf-8"
        return _Reply(fault.status, body.encode() if isinstance(body, str) else body, headers)

    def _token(self, query: dict[str, list[str]]) -> _Reply:
        if query.get("service") != [SERVICE]:
            return _json(400, {"details": "invalid service"})
        parts = [item.split(":") for scope in query.get("scope", []) for item in scope.split(" ")]
        token = secrets.token_urlsafe(32)
        with self.lock:  # anonymous pull on every existing repository, nothing else (the intersection, token.md)
            pullable = {p[1] for p in parts if len(p) == 3 and p[0] == "repository" and "pull" in p[2].split(",")}
            pullable &= self._repos.keys()
            self._tokens[token] = (frozenset(pullable), time.monotonic() + self.token_expires_in)
            self.tokens_issued += 1
        return _json(200, {"token": token, "expires_in": self.token_expires_in})

    def _tags(self, name: str, query: dict[str, list[str]]) -> _Reply:
        with self.lock:
            repo = self._repos.get(name)
            if repo is None:
                return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
            tags = list(repo)
            raw_n = query.get("n", [str(self.page_size)])[0]
            if not raw_n.isdigit():
                return _error(400, "PAGINATION_NUMBER_INVALID", "invalid number of results requested", {"n": raw_n})
            n = min(int(raw_n), self.page_size)
            last = query["last"][0] if "last" in query else None
            if "next_page" in query:
                cursor = self._cursors.get(query["next_page"][0])
                if cursor is None or cursor[0] != name:
                    return _error(400, "UNSUPPORTED", "invalid pagination cursor")
                last = cursor[1]
            start = 0 if last is None else (tags.index(last) + 1 if last in tags else len(tags))
            page = tags[start : start + n]
            headers: dict[str, str] = {}
            if n > 0 and start + n < len(tags):
                if self.opaque_cursor:
                    token = secrets.token_urlsafe(24)
                    self._cursors[token] = (name, page[-1])
                    params = urlencode([("next_page", token), ("n", str(n))])
                else:
                    params = urlencode(sorted({"last": page[-1], "n": str(n)}.items()))
                headers["Link"] = f'<{self.link_base}/v2/{name}/tags/list?{params}>; rel="next"'
        return _json(200, {"name": name, "tags": page}, headers)

    def _manifest(self, method: str, name: str, ref: str, accept: set[str], client_ip: str) -> _Reply:
        with self.lock:
            repo = self._repos.get(name)
            if repo is None:
                return _error(404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name})
            if ":" in ref:
                found = next((v for v in repo.values() if v[0] == ref), None)
                detail: dict[str, str] = {"Name": name, "Revision": ref}
            else:
                found, detail = repo.get(ref), {"Tag": ref}
            if found is None:
                return _error(404, "MANIFEST_UNKNOWN", "manifest unknown", detail)
            digest, media_type = found
            if media_type not in accept:
                if media_type in _OCI_UNACCEPTED:
                    return _error(404, "MANIFEST_UNKNOWN", _OCI_UNACCEPTED[media_type])
                if media_type != DOCKER_LIST or DOCKER_V2 not in accept:
                    return _error(400, "MANIFEST_INVALID", "manifest invalid", {})
                # distribution resolves the list to its linux/amd64 manifest: a different digest.
                digest = "sha256:" + hashlib.sha256(f"{digest} linux/amd64".encode()).hexdigest()
                media_type = DOCKER_V2
            headers = {"Content-Type": media_type, "Docker-Content-Digest": digest, "Etag": f'"{digest}"'}
            if self._limit is not None:
                if method == "GET" and self._remaining <= 0:
                    return _error(429, "TOOMANYREQUESTS", PULL_LIMIT_MESSAGE, None, self._rate_headers(client_ip))
                if method == "GET":
                    self._remaining -= 1
                headers.update(self._rate_headers(client_ip))
        body = {"schemaVersion": 2, "mediaType": media_type, "annotations": {"fake.hub/digest": digest}}
        return _Reply(200, json.dumps(body, sort_keys=True).encode(), headers)

    def _rate_headers(self, client_ip: str) -> dict[str, str]:
        return {
            "ratelimit-limit": f"{self._limit};w={WINDOW}",
            "ratelimit-remaining": f"{self._remaining};w={WINDOW}",
            "docker-ratelimit-source": client_ip,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall per answer

    def do_GET(self) -> None:
        hub: FakeHub = self.server.owner  # type: ignore[attr-defined]
        reply = hub.handle(self.command, self.path, self.headers, self.client_address[0])
        self.send_response(reply.status)
        if self.path.startswith("/v2/"):
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        for key, value in reply.headers.items():
            self.send_header(key, value)
        bodiless = reply.status in (204, 304)  # RFC 9110: no content, whatever a fault asked for
        self.send_header("Content-Length", "0" if bodiless else str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and not bodiless:
            self.wfile.write(reply.body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

"""A Docker-Hub-style token server for the token-auth registry, in-process on 127.0.0.1.

Owns: an ES256 key and self-signed certificate (the registry's `rootcertbundle`), `GET /token` with optional
HTTP Basic auth, the grant rules (anonymous pull on public repositories, pull+push for known users, always the
intersection with what was asked), JWTs signed with only an `x5c` header (valid on distribution 2.8 and v3),
and counters for assertions; on the client side, `TokenAuth`, the Docker Hub token flow for `requests`
(401 -> GET realm?service&scope -> retry with Bearer).
Must not: start the registry (see `registry.py`) or know anything about `reconciler`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from requests.auth import AuthBase

from tests.support.loopback import LoopbackServer
from tests.support.registry import TIMEOUT, LocalRegistry, TokenConfig


def _make_key_and_cert(directory: Path, cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "key-ES256.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "cert-ES256.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


class TokenServer:
    """`GET <realm>?service=…&scope=…` → `{"token", "access_token", "expires_in", "issued_at"}`."""

    def __init__(
        self,
        directory: Path | str,
        *,
        users: Mapping[str, str] | None = None,
        public: set[str] | None = None,
        service: str = "test-registry",
        issuer: str = "test-token-issuer",
        expires_in: int = 300,
        minimal_body: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.users = dict(users or {})
        self.public = public  # None: anonymous pull on every repository
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.minimal_body = minimal_body
        self.cert_path = self.directory / "cert-ES256.pem"
        self._key, cert = _make_key_and_cert(self.directory, issuer)
        self._x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        self.requests_total = 0
        self.requests: list[tuple[list[str], str | None]] = []
        self._lock = threading.Lock()
        self._http = LoopbackServer(_Handler, owner=self, name="token-server")
        self.realm = ""

    def token_config(self) -> TokenConfig:
        """The registry's `auth.token` section pointing at this server."""
        if not self.realm:
            raise RuntimeError("start() the token server first: the realm has no port yet")
        return TokenConfig(
            realm=self.realm, service=self.service, issuer=self.issuer, rootcertbundle=str(self.cert_path)
        )

    def allowed(self, user: str | None, rtype: str, name: str) -> set[str]:
        if rtype == "repository":
            if user is not None:
                return {"pull", "push"}
            return {"pull"} if self.public is None or name in self.public else set()
        if rtype == "registry" and name == "catalog" and user is not None:
            return {"*"}
        return set()

    def grant(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access = []
        for scope in scopes:
            parts = scope.split(":")
            if len(parts) < 3:
                continue
            rtype, name, wanted = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
            actions = [a for a in wanted if a in self.allowed(user, rtype, name)]
            if actions:
                access.append({"type": rtype, "name": name, "actions": sorted(set(actions))})
        return access

    def issue(self, user: str | None, scopes: list[str]) -> dict[str, Any]:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        ts = int(now.timestamp())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": ts + self.expires_in,
            "nbf": ts - 10,
            "iat": ts,
            "jti": secrets.token_hex(16),
            "access": self.grant(user, scopes),
        }
        token = jwt.encode(claims, self._key, algorithm="ES256", headers={"x5c": self._x5c})
        if self.minimal_body:
            return {"token": token}
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def handle(self, query: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """One /token request: (status, JSON body)."""
        params = parse_qs(query)
        scopes = [s for value in params.get("scope", []) for s in value.split(" ") if s]
        user: str | None = None
        ok = True
        if authorization is not None:
            try:
                scheme, _, b64 = authorization.partition(" ")
                user, _, password = base64.b64decode(b64, validate=True).decode().partition(":")
                ok = scheme.lower() == "basic" and self.users.get(user) == password
            except (binascii.Error, UnicodeDecodeError):
                ok = False
        with self._lock:
            self.requests_total += 1
            self.requests.append((scopes, user))
        if not ok:
            return 401, {"details": "incorrect username or password"}
        return 200, self.issue(user, scopes)

    def start(self) -> TokenServer:
        self.realm = f"{self._http.start()}/token"
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall per answer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/token":
            status, body = 404, {"details": "not found"}
        else:
            owner: TokenServer = self.server.owner  # type: ignore[attr-defined]
            status, body = owner.handle(url.query, self.headers.get("Authorization"))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TokenAuth(AuthBase):
    """Docker Hub token flow for `requests`: on a Bearer 401, get a token for that scope, retry once.

    Tokens are cached per repository; the scope string is never compared (its action order is random).
    A token server that refuses (e.g. wrong credentials) raises `requests.HTTPError`.
    """

    def __init__(self, username: str | None = None, password: str | None = None) -> None:
        self.basic = (username, password) if username is not None and password is not None else None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(url: str) -> str:
        path = urlsplit(url).path
        for marker in ("/manifests/", "/blobs/", "/tags/"):
            if marker in path:
                return path.split(marker, 1)[0]
        return path

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        with self._lock:
            token = self._tokens.get(self._key(r.url or ""))
        if token is not None:
            r.headers["Authorization"] = f"Bearer {token}"
        r.hooks["response"].append(self._on_response)
        return r

    def _on_response(self, r: requests.Response, **kwargs: Any) -> requests.Response:
        challenge = r.headers.get("Www-Authenticate", "")
        if r.status_code != 401 or not challenge.lower().startswith("bearer "):
            return r
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {k: v for k, v in params.items() if k in ("service", "scope") and v}
        resp = requests.get(params["realm"], params=query, auth=self.basic, timeout=TIMEOUT)
        resp.raise_for_status()
        token = resp.json()["token"]
        with self._lock:
            self._tokens[self._key(r.request.url or "")] = token
        _ = r.content  # drain the body so the connection can be reused
        r.close()
        prep = r.request.copy()
        prep.headers["Authorization"] = f"Bearer {token}"
        retry: requests.Response = r.connection.send(prep, **kwargs)
        retry.history.append(r)
        retry.request = prep
        return retry


def authed_session(username: str | None = None, password: str | None = None) -> requests.Session:
    """A session that follows Bearer challenges to whatever realm the registry names."""
    s = requests.Session()
    s.auth = TokenAuth(username, password)
    return s


@dataclass(frozen=True, slots=True)
class TokenRegistry:
    """A registry with token auth and the token server it trusts."""

    registry: LocalRegistry
    tokens: TokenServer

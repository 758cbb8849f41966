"""Registry credentials: what they are, where they are found, the Basic header they make, how a message names them.

Credentials come from the configuration (`reconciler/clients.py` puts it first) or, failing that, from the Docker
config and its credential helpers (read through the `docker` package; no engine needed). A credential helper's
"<token>" user stands for an identity token, which `auth` sends over the OAuth2 POST variant of the token auth spec.
Never logs or raises a secret: a message names the user (`who`), never the password or identity token, and a repr
shows neither username nor password.
"""

from __future__ import annotations

import base64
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler import errors


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)
    identity_token: bool = False  # password is an OAuth2 refresh token (credential helpers' "<token>" user)


def docker_config_credentials(config_path: str | None = None) -> Callable[[str], Credentials | None]:
    """A lookup of credentials in the Docker config (`~/.docker/config.json`, `$DOCKER_CONFIG`) and its helpers."""
    loaded: list[Any] = []
    lock = threading.Lock()

    def lookup(registry: str) -> Credentials | None:
        # Here, at the first registry that asks for credentials: the package loads 63 modules (~2 MiB resident).
        from docker import auth as docker_auth  # noqa: PLC0415
        from docker import errors as docker_errors  # noqa: PLC0415

        with lock:
            if not loaded:
                loaded.append(docker_auth.load_config(config_path=config_path))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    found = docker_auth.resolve_authconfig(loaded[0], registry=registry)
            except docker_errors.DockerException as exc:
                raise errors.RegistryAuthError(
                    f"registry {registry}: the Docker credential helper failed: {exc.__class__.__name__}"
                ) from None
        if not found:
            return None
        # `auths` entries use lower-case keys, credential-store results capitalised ones.
        norm = {k.lower(): v for k, v in found.items()}
        if norm.get("identitytoken"):
            return Credentials(username=norm.get("username") or "", password=norm["identitytoken"], identity_token=True)
        if norm.get("username") and norm.get("password"):
            return Credentials(username=norm["username"], password=norm["password"])
        return None

    return lookup


def who(creds: Credentials | None) -> str:
    """Who asks, for a message: `user 'name'`, `anonymous access` or `the configured identity token`."""
    if creds is None:
        return "anonymous access"
    return f"user {creds.username!r}" if creds.username else "the configured identity token"


def basic_header(creds: Credentials) -> dict[str, str]:
    """The `Authorization: Basic …` header of these credentials."""
    raw = f"{creds.username}:{creds.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}

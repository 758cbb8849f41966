"""Asks a registry what a tag points at and which tags exist (protocols.md §1).

`digest` is one HEAD on the manifest with all four manifest media types in Accept, so a multi-arch image
reports its index digest and nothing counts against Docker Hub's pull limit; `tags` follows `Link` pagination
as an opaque URL. Retries of 429/5xx/timeouts (honouring Retry-After) live in the session's urllib3 `Retry`,
mounted by the composition root. Every failure is one `RegistryError` naming the image and the registry.
Receives its `requests.Session`; builds none.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Mapping
from urllib.parse import urljoin

import requests

from reconciler import errors, model
from reconciler.registry import auth

MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(MEDIA_TYPES)
DOCKER_HUB_API = "https://registry-1.docker.io"
MAX_TAG_PAGES = 1000
_RATELIMIT = re.compile(r"^\s*(\d+)\s*;\s*w=(\d+)\s*$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def api_base(registry: str, overrides: Mapping[str, str]) -> str:
    """Where a registry's API is served: the configured `url`, Docker Hub's API host, else https://<host>."""
    if registry in overrides:
        return overrides[registry].rstrip("/")
    return DOCKER_HUB_API if registry == model.DOCKER_HUB else f"https://{registry}"


def _error_message(response: requests.Response) -> str:
    """The registry's own words from the OCI error envelope (`detail` may be any JSON type)."""
    try:
        body = response.json()
        found = body["errors"][0]
        text = str(found.get("message") or found.get("code"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        text = (response.text or "").strip().splitlines()[0][:200] if response.text.strip() else ""
    return text or response.reason or "no reason given"


class RegistryClient:
    """Reads digests and tag lists; thread-safe so a pool of workers can share one client."""

    def __init__(
        self,
        *,
        session: requests.Session,
        authenticator: auth.Authenticator,
        urls: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self._session = session
        self._auth = authenticator
        self._urls = dict(urls or {})
        self._timeout = timeout
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (registry, method, status) -> count
        self.ratelimit_remaining: dict[str, int] = {}

    def digest(self, image: model.ImageRef, tag: str) -> str:
        """The digest the tag points at now (the index digest for a multi-arch image)."""
        url = f"{api_base(image.registry, self._urls)}/v2/{image.repository}/manifests/{tag}"
        response = self._send("HEAD", url, image=image, what=f"{image}:{tag}")
        if response.status_code == 404:
            raise errors.TagNotFound(f"registry {image.registry} has no tag {tag!r} for {image}")
        self._check(response, what=f"{image}:{tag}", registry=image.registry)
        digest = response.headers.get("Docker-Content-Digest", "")
        if not _DIGEST.match(digest):
            raise errors.RegistryError(
                f"registry {image.registry} sent no usable Docker-Content-Digest for {image}:{tag} ({digest[:80]!r})"
            )
        return digest

    def tags(self, image: model.ImageRef) -> list[str]:
        """Every tag of the repository, following `Link: <…>; rel="next"` pages in the registry's order."""
        url: str | None = f"{api_base(image.registry, self._urls)}/v2/{image.repository}/tags/list"
        seen_urls: set[str] = set()
        found: list[str] = []
        while url is not None:
            if url in seen_urls or len(seen_urls) >= MAX_TAG_PAGES:
                raise errors.RegistryError(f"registry {image.registry} sent a tag list for {image} that never ends")
            seen_urls.add(url)
            response = self._send("GET", url, image=image, what=f"the tags of {image}")
            if response.status_code == 404:
                raise errors.TagNotFound(f"registry {image.registry} has no repository {image.repository}")
            self._check(response, what=f"the tags of {image}", registry=image.registry)
            found.extend(self._parse_tags(response, image))
            following = response.links.get("next", {}).get("url")
            url = urljoin(response.url, following) if following else None
        return found

    @staticmethod
    def _parse_tags(response: requests.Response, image: model.ImageRef) -> list[str]:
        try:
            body = response.json()
            tags = body.get("tags") or []
        except (ValueError, AttributeError):
            tags = None
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise errors.RegistryError(f"registry {image.registry} sent a malformed tag list for {image}")
        return tags

    def _send(self, method: str, url: str, *, image: model.ImageRef, what: str) -> requests.Response:
        registry = image.registry
        scope = f"repository:{image.repository}:pull"
        headers = {"Accept": ACCEPT, **self._auth.cached_header(registry, scope)}
        response = self._request(method, url, headers=headers, registry=registry, what=what)
        if response.status_code == 401:
            challenge = response.headers.get("WWW-Authenticate")
            headers.update(
                self._auth.answer(
                    registry=registry,
                    header=challenge,
                    scope=scope,
                    image=str(image),
                    rejected=headers.get("Authorization"),
                )
            )
            response = self._request(method, url, headers=headers, registry=registry, what=what)
            if response.status_code == 401:
                raise errors.RegistryAuthError(
                    f"registry {registry} refused access to {what} (401) even with a token; "
                    "check the credentials and that the repository exists (Docker Hub answers 401 for both)"
                )
        return response

    def _request(
        self, method: str, url: str, *, headers: dict[str, str], registry: str, what: str
    ) -> requests.Response:
        try:
            response = self._session.request(method, url, headers=headers, timeout=self._timeout, allow_redirects=True)
        except requests.Timeout:
            raise errors.RegistryError(f"registry {registry} did not answer in time for {what} ({url})") from None
        except requests.RequestException as exc:
            reason = _root_cause(exc)
            raise errors.RegistryError(f"cannot reach registry {registry} for {what} at {url}: {reason}") from None
        with self._lock:
            self.requests[(registry, method, response.status_code)] += 1
            remaining = _RATELIMIT.match(response.headers.get("ratelimit-remaining", ""))
            if remaining:
                self.ratelimit_remaining[registry] = int(remaining.group(1))
        return response

    def _check(self, response: requests.Response, *, what: str, registry: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = _error_message(response)
        if status == 429:
            raise errors.RegistryRateLimited(
                f"registry {registry} is rate-limiting requests for {what} (429: {message}); "
                "it will be asked again next pass — authenticate to raise the limit"
            )
        if status == 403:
            raise errors.RegistryAuthError(f"registry {registry} denied access to {what} (403: {message})")
        raise errors.RegistryError(f"registry {registry} answered {status} for {what}: {message}")


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a requests/urllib3 error chain, short enough for one line."""
    text = str(exc)
    for marker in (
        "Connection refused",
        "Name or service not known",
        "timed out",
        "No route to host",
        "Temporary failure in name resolution",
        "certificate verify failed",
        "Connection reset",
    ):
        if marker in text:
            return marker.lower()
    return type(exc).__name__

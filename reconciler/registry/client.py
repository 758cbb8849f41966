"""Asks a registry what a tag points at and which tags exist (OCI distribution-spec).

`digest` is one HEAD on the manifest with all four manifest media types in Accept, so a multi-arch image
reports its index digest and nothing counts against Docker Hub's pull limit; `tags` follows `Link` pagination
as an opaque URL. Retries of 429/5xx/timeouts (honouring Retry-After) live in the session's urllib3 `Retry`,
mounted by the composition root. Every failure is one `RegistryError` naming the image and the registry.
Receives its `requests.Session`; builds none.

Only tags in the OCI grammar (`model.check_tag`: at most 128 of letters, digits, `._-`, not starting with `.` or
`-`) leave `tags`; any other is skipped with one warning per image and tag for the life of the client (the daemon
holds one), so a registry's junk tag can neither be chosen nor break storing a pass.

Credentials stay on the registry's own origin (scheme, host and port of its API base, as `answers.origin` reads them):
* a `Link: <…>; rel="next"` to another origin is refused with one `RegistryError` and nothing is sent there.
  Following it anonymously would hand the tag list, and so the release chosen, to a host nobody configured,
  and its 401 would name a token realm that our Basic credentials would then be sent to;
* a redirect to another origin is followed without credentials: requests' `Session.rebuild_auth` drops the
  `Authorization` header (ours too, though passed as `headers=`) when `should_strip_auth` sees another host,
  port or scheme (bar http→https on the default ports); if that origin answers 401, its challenge is not
  answered (no token fetched from its realm, no Basic credentials), but is one `RegistryAuthError`, and it is
  not remembered as the registry's own scheme.
An operator who trusts the other origin sets it as the registry's `url`.
The `ratelimit-remaining` of the last manifest answer is kept per registry; an answer without it (Docker Hub:
unlimited), or with one that is no count of at most 12 digits, drops the registry from `ratelimit_remaining`, so
the gauge built on it disappears.

No answer crashes a check: values are read with bounds where they enter (JSON of any nesting, counts of at most 12
digits, `Link` and redirect `Location` URLs that may not parse, registry text cut to one printable line by
`answers.error_message`), and `digest`/`tags` have one guard, `answers.unforeseen`, that turns whatever else an
answer raises into one `RegistryError` naming the registry and image.

A repository that does not exist, or that we may not see, reads "<image>: repository not found or private
(registry <registry> answered <status>)", whichever request found it:
* 404 NAME_UNKNOWN ("repository name not known to registry", distribution-spec "Error Codes") on the tag list;
* a 404 on the manifest HEAD has no body to say whether the tag or the repository is missing, and distribution
  2.8.2 answers a manifest GET with MANIFEST_UNKNOWN for both (checked against the real registry), so the tag list
  is asked once, on that error path only (no pull is counted): its 404 NAME_UNKNOWN means the repository, a 200
  means the tag alone is missing, and then the message says so, as before;
* 401 again once the token server has issued a token: Docker Hub answers a repository that does not exist and a
  private one alike with 401 UNAUTHORIZED and `error="insufficient_scope"`, as its token server issues a token
  for any repository (hashicorp/terraform-provider-docker#140; docker-archive/docker-registry#1071 shows the exchange,
  docker/hub-feedback#1771 the token issued for a repository that does not exist). distribution with token auth
  does the same for a repository the token grants nothing on. `error="invalid_token"` is a token the registry does
  not accept, and says that instead.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from urllib.parse import urljoin

import requests

from reconciler import errors, model
from reconciler.registry import answers, auth

log = logging.getLogger(__name__)

MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(MEDIA_TYPES)
DOCKER_HUB_API = "https://registry-1.docker.io"
MAX_TAG_PAGES = 1000
MAX_WARNED_TAGS = 10_000  # invalid (image, tag) pairs remembered; past it, further ones are skipped silently
_RATELIMIT = re.compile(r"\s*([0-9]{1,12})\s*;\s*w=([0-9]{1,12})\s*")  # fullmatch; bounded: int() of 5,000 digits fails
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")  # fullmatch


def api_base(registry: str, overrides: Mapping[str, str]) -> str:
    """Where a registry's API is served: the configured `url`, Docker Hub's API host, else https://<host>."""
    if registry in overrides:
        return overrides[registry].rstrip("/")
    return DOCKER_HUB_API if registry == model.DOCKER_HUB else f"https://{registry}"


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
        self._warned: set[tuple[str, str]] = set()  # (image, tag) outside the grammar, already logged

    def digest(self, image: model.ImageRef, tag: str) -> str:
        """The digest the tag points at now (the index digest for a multi-arch image)."""
        what = f"{image}:{tag}"
        with answers.unforeseen(image.registry, what):
            url = f"{api_base(image.registry, self._urls)}/v2/{image.repository}/manifests/{tag}"
            response = self._send("HEAD", url, image=image, what=what)
            if response.status_code == 404:
                raise self._missing(image, tag)
            self._check(response, what=what, registry=image.registry)
            if not _RATELIMIT.fullmatch(response.headers.get("ratelimit-remaining", "")):
                with self._lock:  # pulls.md: "If the headers are missing, the image/IP/user is unlimited"
                    self.ratelimit_remaining.pop(image.registry, None)
            digest = response.headers.get("Docker-Content-Digest", "")
            if not _DIGEST.fullmatch(digest):
                raise errors.RegistryError(
                    f"registry {image.registry} sent no usable Docker-Content-Digest for {what} ({digest[:80]!r})"
                )
            return digest

    def tags(self, image: model.ImageRef) -> list[str]:
        """Every valid tag of the repository, following `Link: <…>; rel="next"` pages in the registry's order."""
        what = f"the tags of {image}"
        with answers.unforeseen(image.registry, what):
            first = f"{api_base(image.registry, self._urls)}/v2/{image.repository}/tags/list"
            url: str | None = first
            seen_urls: set[str] = set()
            found: list[str] = []
            while url is not None:
                if url in seen_urls or len(seen_urls) >= MAX_TAG_PAGES:
                    raise errors.RegistryError(f"registry {image.registry} sent a tag list for {image} that never ends")
                seen_urls.add(url)
                response = self._send("GET", url, image=image, what=what)
                if response.status_code == 404:
                    raise answers.repository_not_found(image, response)
                self._check(response, what=what, registry=image.registry)
                found.extend(self._parse_tags(response, image))
                url = self._next_page(response, first=first, image=image)
            return self._valid(image, found)

    def _missing(self, image: model.ImageRef, tag: str) -> errors.RegistryError:
        """What the manifest HEAD's 404 meant: the repository is unknown (the tag list's 404 NAME_UNKNOWN says so)
        or only the tag is missing (anything else: the 404 on the manifest stands)."""
        missing_tag = errors.TagNotFound(f"registry {image.registry} has no tag {tag!r} for {image}")
        url = f"{api_base(image.registry, self._urls)}/v2/{image.repository}/tags/list?n=1"
        try:
            response = self._send("GET", url, image=image, what=f"the tags of {image}")
        except errors.RegistryError:  # the list cannot tell: the manifest's 404 is the answer
            return missing_tag
        if response.status_code == 404 and answers.error_code(response) == "NAME_UNKNOWN":
            return answers.repository_not_found(image, response)
        return missing_tag

    @staticmethod
    def _next_page(response: requests.Response, *, first: str, image: model.ImageRef) -> str | None:
        """The URL of the next page, None on the last; a link that cannot be parsed or leaves the origin is refused."""
        following = response.links.get("next", {}).get("url")
        try:
            url = urljoin(response.url, following) if following else None
            leaves = url is not None and answers.origin(url) != answers.origin(first)
        except ValueError:  # `http://[`, a netloc that NFKC-normalises into another
            raise errors.RegistryError(
                f"registry {image.registry} sent a next-page link for the tags of {image} that cannot be read"
            ) from None
        if url is not None and leaves:
            raise errors.RegistryError(
                f"registry {image.registry} sent a next-page link for the tags of {image} that leaves "
                f"{answers.show_origin(first)} for {answers.show_origin(url)}; it is not followed, so neither our "
                "credentials nor its tags cross over (set the registry's url to that origin if you trust it)"
            )
        return url

    def _valid(self, image: model.ImageRef, tags: Iterable[str]) -> list[str]:
        kept: list[str] = []
        for tag in tags:
            try:
                kept.append(model.check_tag(tag))
            except errors.ConfigError:
                key = (str(image), tag[:256])  # bounded: a hostile registry's tags may be of any length
                with self._lock:
                    first_time = key not in self._warned and len(self._warned) < MAX_WARNED_TAGS
                    if first_time:
                        self._warned.add(key)
                if first_time:
                    log.warning(
                        "registry %s lists %s for %s, which is not a valid tag (at most 128 letters, digits, . _ -, "
                        "not starting with . or -); skipping it",
                        image.registry,
                        answers.show_tag(tag),
                        image,
                    )
        return kept

    @staticmethod
    def _parse_tags(response: requests.Response, image: model.ImageRef) -> list[str]:
        try:
            tags = auth.json_body(response).get("tags") or []
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
        if response.status_code == 401 and answers.origin(response.url) != answers.origin(url):
            raise errors.RegistryAuthError(
                f"registry {registry} redirected {what} to {answers.show_origin(response.url)}, which asked for "
                f"credentials; they are only sent to {answers.show_origin(url)} (set the registry's url to that origin "
                "if you trust it)"
            )
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
                raise self._refused(response, image=image, what=what, sent=headers.get("Authorization", ""))
        return response

    def _refused(
        self, response: requests.Response, *, image: model.ImageRef, what: str, sent: str
    ) -> errors.RegistryAuthError:
        """A 401 to the request that carried the answer to the registry's challenge (see the module's docstring)."""
        registry = image.registry
        if not sent.startswith("Bearer "):
            return errors.RegistryAuthError(
                f"registry {registry} refused access to {what} (401) with the credentials configured for it; check them"
            )
        challenge = auth.parse_challenge(response.headers.get("WWW-Authenticate"))
        if challenge is not None and challenge.params.get("error") == "invalid_token":
            return errors.RegistryAuthError(
                f"registry {registry} refused the token its token server issued for {what} (401 invalid_token); "
                "check that the registry trusts that token server"
            )
        return errors.RegistryAuthError(
            f"{image}: repository not found or private (registry {registry} answered 401 to "
            f"{self._auth.identity(registry)})"
        )

    def _request(
        self, method: str, url: str, *, headers: dict[str, str], registry: str, what: str
    ) -> requests.Response:
        hooks = {"response": [auth.refuse_unfollowable_redirect]}  # requests follows redirects, but cannot all
        try:
            response = self._session.request(
                method, url, headers=headers, timeout=self._timeout, allow_redirects=True, hooks=hooks
            )
        except auth.UnfollowableRedirect:
            raise errors.RegistryError(
                f"registry {registry} redirected {what} to a Location that cannot be followed"
            ) from None
        except requests.Timeout:
            shown = auth.one_line(url)
            raise errors.RegistryError(f"registry {registry} did not answer in time for {what} ({shown})") from None
        except requests.RequestException as exc:
            reason = answers.root_cause(exc)
            shown = auth.one_line(url)
            raise errors.RegistryError(f"cannot reach registry {registry} for {what} at {shown}: {reason}") from None
        with self._lock:
            self.requests[(registry, method, response.status_code)] += 1
            remaining = _RATELIMIT.fullmatch(response.headers.get("ratelimit-remaining", ""))
            if remaining:
                self.ratelimit_remaining[registry] = int(remaining.group(1))
        return response

    def _check(self, response: requests.Response, *, what: str, registry: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = answers.error_message(response)
        if status == 429:
            raise errors.RegistryRateLimited(
                f"registry {registry} is rate-limiting requests for {what} (429: {message}); "
                "it will be asked again next pass — authenticate to raise the limit"
            )
        if status == 403:
            raise errors.RegistryAuthError(f"registry {registry} denied access to {what} (403: {message})")
        raise errors.RegistryError(f"registry {registry} answered {status} for {what}: {message}")

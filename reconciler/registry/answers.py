"""Reads what a registry answered, without trusting it, and names things in the client's errors.

`error_message` is the registry's own words from the OCI error envelope (`message`, else `code`; `detail` may be
any JSON type), else the first 4096 bytes of the body in its declared charset (UTF-8 when it declares none or one
Python does not know), else the HTTP reason, cut to one printable line; `error_code` is the envelope's first `code`
when it looks like one (NAME_UNKNOWN, MANIFEST_UNKNOWN, …), else None. `repository_not_found` is the message for a
404 that means the repository (the client's docstring says when), with that code if the registry sent one:
"<image>: repository not found or private (registry <registry> answered 404 NAME_UNKNOWN)".

`unforeseen` is the one guard `digest` and `tags` run in: whatever an answer raises that no reader foresaw becomes
one `RegistryError` naming the registry and the image, with the exception's type but never its text (it may quote
a header, and so a credential); the traceback goes to the client's debug log. Our own errors pass through.
`root_cause` is why a registry could not be reached, in a few words (connection refused, certificate verify failed,
…) or else the exception's type.

`origin` is the origin credentials stay on (see the client's docstring), in the form in which two spellings of one
origin compare equal: scheme and host lower-cased, the default port of http and https filled in, and a port that
cannot be read an origin nothing else has. `show_origin` and `show_tag` put an origin or a registry's tag into one
line of a message or the log, escaped and bounded.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests

from reconciler import errors, model
from reconciler.registry import auth

log = logging.getLogger("reconciler.registry.client")  # the client's log: `unforeseen` ends one of its checks

_DEFAULT_PORTS = {"http": 80, "https": 443}
_ERROR_CODE = re.compile(r"[A-Z][A-Z_]{0,39}")  # fullmatch: NAME_UNKNOWN, MANIFEST_UNKNOWN, …


def origin(url: str) -> tuple[str, str, int]:
    """Scheme, host and port of a URL, in the form in which two spellings of one origin compare equal."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # an unreadable port: an origin nothing else has
        port = -1
    return scheme, (parts.hostname or "").lower(), port if port is not None else _DEFAULT_PORTS.get(scheme, -1)


def show_origin(url: str) -> str:
    scheme, host, port = origin(url)
    return auth.one_line(f"{scheme}://{host}:{port}", 120)


def show_tag(tag: str) -> str:
    """A tag fit for one log line: escaped, and cut short when it is too long to be a tag anyway."""
    return repr(tag) if len(tag) <= 128 else f"a {len(tag)}-character tag starting {tag[:32]!r}"


def error_message(response: requests.Response) -> str:
    """The registry's own words from the OCI error envelope (`detail` may be any JSON type), as one line."""
    try:
        found = auth.json_body(response)["errors"][0]
        text = str(found.get("message") or found.get("code"))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, RecursionError):
        try:  # not the envelope: the body's first line, read without guessing the charset of a large body
            text = response.content[:4096].decode(response.encoding or "utf-8", "replace")
        except LookupError:  # a charset Python does not know
            text = response.content[:4096].decode("utf-8", "replace")
    return auth.one_line(text) or auth.one_line(response.reason or "") or "no reason given"


def error_code(response: requests.Response) -> str | None:
    """The first error's `code` in the OCI error envelope, when the body is one and the code looks like one."""
    try:
        code = auth.json_body(response)["errors"][0]["code"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return code if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else None


def repository_not_found(image: model.ImageRef, response: requests.Response) -> errors.TagNotFound:
    code = error_code(response)
    answered = f"404 {code}" if code else "404"
    return errors.TagNotFound(
        f"{image}: repository not found or private (registry {image.registry} answered {answered})"
    )


@contextlib.contextmanager
def unforeseen(registry: str, what: str) -> Iterator[None]:
    """The boundary: what a registry's answer raises that no reader foresaw becomes one RegistryError."""
    try:
        yield
    except errors.ReconcilerError:
        raise
    except Exception as exc:  # a watch's check must end in our error tree, whatever the registry sent
        log.debug("registry %s: unreadable answer for %s", registry, what, exc_info=True)
        raise errors.RegistryError(
            f"registry {registry} sent an answer for {what} that cannot be read ({type(exc).__name__})"
        ) from None  # never str(exc): it may quote a header, and so a credential


def root_cause(exc: BaseException) -> str:
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

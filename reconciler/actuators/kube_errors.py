"""How the Kubernetes API fails, mapped once into our error tree for the StatefulSet actuator: the client's own
exceptions, HTTP statuses (403 naming the verb, 404 naming the object, 409, 422, 429/5xx asked again), and
answers that cannot be read (what the client cannot decode, or what lacks what the roll-out reads).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager

from kubernetes import utils as k8s_utils
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError
from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, ResponseError

from reconciler import errors, model
from reconciler.actuators import rollout


class Unavailable(errors.KubeUnavailable):
    """A 429, a 5xx or no answer, as `mapped` saw it.

    `maybe_applied`: the request may have been acted on (a 5xx, a dropped connection), so a PATCH must be looked
    for before it is sent again; False when it surely was not (a 429 from the overload filters, a refused
    connection). `retry_after`: the server's Retry-After in seconds, if it sent one.
    """

    def __init__(self, message: str, *, maybe_applied: bool, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.maybe_applied = maybe_applied
        self.retry_after = retry_after


class NotFound(errors.KubeError):
    """404: the message names the object (or the resource) that was not found."""


class Unreadable(errors.KubeError):
    """A 2xx answer that cannot be read, as `mapped` saw it: the message names the object and what is wrong.

    Not a KubeUnavailable: something did answer, and one garbled answer (a proxy's page, a body cut or mis-encoded
    on the way) cannot be told from an API server that always sends it. So what it costs follows from what was sent:
    before the PATCH, nothing changed, and failing the attempt (retried after a back-off) is cheap: a plain
    KubeError; after the PATCH was answered 2xx, the patch was most likely applied, so it is looked for as after a
    5xx; while waiting, failing would fail a roll-out that may be going well (and its retry restart every pod
    again), so it is a blip like a 5xx, polled through until the timeout, then left open for the next pass.
    """


# What the client raises while decoding an answer (it catches none of them): JSONDecodeError, UnicodeDecodeError,
# pydantic's ValidationError (all ValueErrors), LookupError for a charset Python does not know, RecursionError for
# JSON nested deeper than the parser recurses, TypeError for a list field served as a boolean; and our own
# rollout.Unreadable (a ValueError) for an answer without what the roll-out reads. (Before sending, the client raises
# them only for arguments that do not fit its methods: ours are the same on every call, and the roll-out tests make
# each call.)
UNDECODABLE = (ValueError, TypeError, LookupError, RecursionError)


@contextmanager
def mapped(
    verb: str, resource: str, spec: model.StatefulSetAction, *, host: str, name: str | None = None
) -> Iterator[None]:
    """Every Kubernetes error, mapped once. `name`: the object of `resource` (default: the StatefulSet)."""
    where = f"{resource} in namespace {spec.namespace}"
    try:
        yield
    except ApiException as exc:
        status = exc.status or 0
        message = status_message(exc)
        group = "apps" if resource == "statefulsets" else '"" (core)'
        if status == 403:
            raise errors.KubeError(
                f"Kubernetes forbids {verb} on {where} (403): grant the ServiceAccount the "
                f"{verb!r} verb on {resource} in API group {group} ({message})"
            ) from None
        if status == 404:
            what = object_name(resource, spec, name)
            raise NotFound(f"{what} not found (404): {message}") from None
        if status == 409:
            raise errors.KubeConflict(f"Kubernetes reported a conflict on {where} (409): {message}") from None
        if status == 422:
            raise errors.KubeError(f"Kubernetes rejected the {verb} of {where} (422): {message}") from None
        if status == 401:
            raise errors.KubeError(f"Kubernetes refused the credentials at {host} (401)") from None
        if status == 0 and str(exc.reason).startswith("Unsupported content type"):
            # the client's own, for a 2xx whose Content-Type it does not decode (protobuf, YAML): it was answered
            raise Unreadable(unreadable(verb, resource, spec, name, str(exc.reason))) from None
        if status == 0:  # the client's own ApiException for a TLS failure: nothing was sent
            raise Unavailable(f"cannot reach the Kubernetes API at {host}: {message}", maybe_applied=False) from None
        if status == 429 or status >= 500:
            # 429 is the overload filters' "not processed, ask again" (apiserver maxinflight.go); a 5xx may come after
            # the write (the timeout filter's 504 while the handler goes on)
            raise Unavailable(
                f"Kubernetes answered {status} to {verb} on {where}: {message}",
                maybe_applied=status != 429,
                retry_after=retry_after(exc),
            ) from None
        raise errors.KubeError(f"Kubernetes answered {status} to {verb} on {where}: {message}") from None
    except (HTTPError, OSError) as exc:
        cause = exc.reason if isinstance(exc, MaxRetryError) else exc
        if isinstance(cause, ResponseError) and (answered := re.search(r"\b(\d{3})\b", str(cause))):
            # urllib3's own Retry (a client built without `configuration.retries`) re-sent a GET or DELETE
            # answered 429/503 with Retry-After, sleeping in real time, until it gave up
            status = int(answered[1])
            raise Unavailable(
                f"Kubernetes answered {status} to {verb} on {where}, again and again",
                maybe_applied=status != 429,
            ) from None
        # refused, DNS, connect timeout: the request never left; a dropped connection or read timeout: it may
        # have been acted on (urllib3 re-sends neither for a PATCH, not an idempotent method to it)
        raise Unavailable(
            f"cannot reach the Kubernetes API at {host}: {type(cause).__name__}",
            maybe_applied=not isinstance(cause, ConnectTimeoutError),  # NewConnectionError is one
        ) from None
    except UNDECODABLE as exc:  # after HTTPError: urllib3's LocationParseError is a ValueError too
        raise Unreadable(unreadable(verb, resource, spec, name, why(exc))) from None


def object_name(resource: str, spec: model.StatefulSetAction, name: str | None) -> str:
    if resource == "statefulsets":
        return f"StatefulSet {spec.namespace}/{name or spec.name}"
    if name is not None:
        return f"{resource.removesuffix('s')} {spec.namespace}/{name}"
    return f"{resource} in namespace {spec.namespace}"


def unreadable(verb: str, resource: str, spec: model.StatefulSetAction, name: str | None, why: str) -> str:
    noun = "a StatefulSet" if resource == "statefulsets" else "a pod" if name is not None else "a pod list"
    return f"the Kubernetes API sent {noun} that cannot be read ({verb} {object_name(resource, spec, name)}): {why}"


def why(exc: BaseException) -> str:
    """What could not be read, on one line."""
    if isinstance(exc, ValidationError):  # its str() spans lines, and shows the input
        first = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        where = ".".join(map(str, first["loc"]))
        text = f"{exc.title}{f' {where}' if where else ''}: {first['msg']}{more}"
    elif isinstance(exc, RecursionError):
        text = "JSON nested too deeply to read"
    elif isinstance(exc, rollout.Unreadable):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:300]


def retry_after(exc: ApiException) -> float | None:
    """The answer's Retry-After in whole seconds, client-go's parse; None when there is none to honour."""
    try:
        return k8s_utils.retry_after_seconds(exc)
    except (ValueError, OverflowError):  # more digits than int() reads, or more seconds than a float holds
        return None


def status_message(exc: ApiException) -> str:
    """The Status `message`; else a plain-text body, as client-go reads an unstructured error (the overload filters'
    429 is text: http.Error, "Too many requests, please try again later."). On one line, whatever was sent."""
    body = exc.body or ""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        text = " ".join(body.split())[:300]
        return text or " ".join(str(exc.reason or "no details").split())
    if isinstance(parsed, dict) and parsed.get("message"):
        return " ".join(str(parsed["message"]).split())[:1000]
    return " ".join(str(exc.reason or "no details").split())

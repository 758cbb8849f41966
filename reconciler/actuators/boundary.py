"""The edge every actuator method stands behind: whatever the system sends, the method ends in our error tree;
and what a failed connection says about a POST (`never_connected`).

An answer the code cannot read (a field of the wrong type, a number no float holds, JSON too deep) fails a lookup
(`fail`: the system's own error), leaves a launch's outcome unknown (`unknown`: it is looked for, never re-sent),
or hands a wait over to a later pass (`unfinished`: the action stays open).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Concatenate, Literal, ParamSpec, Protocol, TypeVar

import requests

from reconciler import errors, model

# What an odd answer does to code reading it.
ODD = (ValueError, TypeError, KeyError, IndexError, AttributeError, LookupError, RecursionError, OverflowError)
_P = ParamSpec("_P")
_R = TypeVar("_R")
_A = TypeVar("_A")
_S = TypeVar("_S", bound="_Served")


class _Served(Protocol):
    @property
    def server(self) -> str: ...


def guard(
    then: Literal["fail", "unknown", "unfinished"], *, system: str, error: type[errors.ActuatorError]
) -> Callable[[Callable[Concatenate[_A, _S, _P], _R]], Callable[Concatenate[_A, _S, _P], _R]]:
    """Wrap an actuator method taking `(self, spec, …)`; `system` names it in the message ("AWX", "GitHub")."""

    def wrap(method: Callable[Concatenate[_A, _S, _P], _R]) -> Callable[Concatenate[_A, _S, _P], _R]:
        def guarded(self: _A, spec: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return method(self, spec, *args, **kwargs)
            except ODD as exc:
                reason = str(exc).splitlines()[0][:120] if str(exc) else ""
                message = f"{system} {spec.server} sent an answer that cannot be read ({type(exc).__name__}: {reason})"
            if then == "unknown":
                raise errors.LaunchOutcomeUnknown(message, answered=True)
            if then == "unfinished":
                return model.Unfinished(f"{message}; it is followed again in the next pass")  # type: ignore[return-value]
            raise error(message)

        functools.update_wrapper(guarded, method)
        return guarded

    return wrap


def never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was refused, unresolvable or its TLS handshake failed: nothing reached the system.
    A TLS error after the request went out (a broken record, an EOF) is not: the POST may have been acted on."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError):
        return any(m in text for m in ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "HANDSHAKE", "handshake"))
    markers = ("NewConnectionError", "Connection refused", "Name or service not known", "Failed to resolve")
    return any(m in text for m in (*markers, "No route to host", "Temporary failure in name resolution"))

"""The few AWX REST endpoints reconciler needs, for one server, with AWX's conventions and misbehaviour mapped once.

Conventions (AWX's REST API docs): a trailing slash on every URL (a 301 would turn the launch POST into a GET),
Bearer or Basic auth, lists paged by relative `next` links. How each answer to a POST is read (checked
against AWX 24.6.1's source, github.com/ansible/awx):
- AWX's own 500 carries its JSON body (awx/main/views.py `handle_500`: `{"detail": "A server error has
  occurred."}`) and its request was rolled back (`ATOMIC_REQUESTS`): nothing was created — an outage.
- A 502/503/504 (or a 5xx without AWX's body) comes from a gateway in front: the worker behind it may still
  create the job, so the outcome is unknown and must be looked for, never sent again blindly.
- A connection that was never made (refused, DNS, TLS) reached nothing — an outage; one dropped after sending
  leaves the outcome unknown.
Paging stops at a repeated `next` and after MAX_PAGES. Receives its `requests.Session`; builds none. The launch
POST is never retried automatically.
"""

from __future__ import annotations

import difflib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from reconciler import errors
from reconciler.actuators import boundary

log = logging.getLogger(__name__)
MAX_PAGES = 50
GATEWAY_STATUSES = frozenset({502, 503, 504})


@dataclass(frozen=True, slots=True)
class Server:
    """One `[awx.NAME]` section, with its credentials resolved."""

    name: str
    url: str
    authorization: str  # the whole Authorization header value; never logged
    timeout: timedelta
    poll: timedelta
    marker: str = "reconciler_action"  # the extra var naming the action a launch belongs to; "" = none


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job (`jobs`) or a workflow job (`workflow_jobs`); stored as `4242` or `workflow_job:77`."""

    kind: str
    id: int

    @classmethod
    def parse(cls, ref: str) -> JobRef:
        kind, _, number = ref.rpartition(":")
        if not number.isdigit() or kind not in ("", "workflow_job"):
            raise errors.AwxError(f"{ref!r} is not an AWX job reference")
        return cls("workflow_jobs" if kind else "jobs", int(number))

    def __str__(self) -> str:
        return f"workflow_job:{self.id}" if self.kind == "workflow_jobs" else str(self.id)

    @property
    def noun(self) -> str:
        return f"workflow job {self.id}" if self.kind == "workflow_jobs" else f"job {self.id}"


def _body(response: requests.Response) -> object:
    try:
        return response.json()
    except (ValueError, RecursionError):
        return None


def _detail(response: requests.Response) -> str:
    """AWX's own words, on one line: DRF `{"detail": …}` or field errors `{"field": ["msg"]}`."""
    body = _body(response)
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        text = str(body["detail"])
    elif isinstance(body, dict):
        text = "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items())
    else:
        text = response.text or response.reason or ""
    return " ".join(text.split())[:300] or "no details"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    return parts.scheme.lower(), (parts.hostname or "").lower(), port


class AwxClient:
    def __init__(self, *, session: requests.Session, server: Server, request_timeout: float = 30.0) -> None:
        self._session = session
        self.server = server
        self._timeout = request_timeout
        self._templates: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"{self.server.url}/api/v2/{path.strip('/')}/"

    def link(self, job: JobRef) -> str:
        page = "workflow" if job.kind == "workflow_jobs" else "playbook"
        return f"{self.server.url}/#/jobs/{page}/{job.id}"

    def _call(
        self, method: str, url: str, *, what: str, accept: frozenset[int] = frozenset(), **kwargs: Any
    ) -> requests.Response:
        """One request; an answer below 300 or in `accept` is returned, anything else raised as one error."""
        name = f"AWX {self.server.name}"
        headers = {"Authorization": self.server.authorization, "Accept": "application/json"}
        try:
            response = self._session.request(
                method, url, headers=headers, timeout=self._timeout, allow_redirects=False, **kwargs
            )
        except requests.ConnectTimeout:
            raise errors.AwxUnavailable(f"cannot reach {name} at {self.server.url} while {what}") from None
        except requests.ConnectionError as exc:
            if method == "POST" and not boundary.never_connected(exc):
                raise errors.LaunchOutcomeUnknown(f"{name} dropped the connection while {what}") from None
            raise errors.AwxUnavailable(f"cannot reach {name} at {self.server.url} while {what}") from None
        except requests.Timeout:
            if method == "POST":
                raise errors.LaunchOutcomeUnknown(f"{name} did not answer in time while {what}") from None
            raise errors.AwxUnavailable(f"{name} did not answer in time while {what}") from None
        except requests.RequestException as exc:  # the request went out; the answer broke off
            error = errors.LaunchOutcomeUnknown if method == "POST" else errors.AwxUnavailable
            raise error(f"{name} failed while {what}: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300 or status in accept:
            return response
        if status == 401:
            raise errors.AwxError(f"{name} refused the credentials while {what} (401); check the token or username")
        if status == 403:
            raise errors.AwxError(f"{name} denied {what} (403): {_detail(response)}")
        if status >= 500 and method == "POST":
            body = _body(response)
            if status == 500 and isinstance(body, dict) and "detail" in body:
                raise errors.AwxUnavailable(
                    f"{name} answered 500 while {what} ({_detail(response)}); it rolled the request back"
                )
            source = "a gateway in front of it" if status in GATEWAY_STATUSES else "something in front of it"
            raise errors.LaunchOutcomeUnknown(
                f"{source} answered {status} while {what}, and AWX may still act on it", answered=False
            )
        if status >= 500:  # a read that failed changed nothing: an outage, not a refusal
            raise errors.AwxUnavailable(f"{name} answered {status} while {what}")
        raise errors.AwxError(f"{name} answered {status} while {what}: {_detail(response)}")

    def _json(self, response: requests.Response, what: str) -> dict[str, Any]:
        body = _body(response)
        if not isinstance(body, dict):
            raise errors.AwxError(f"AWX {self.server.name} sent a malformed answer while {what}")
        return body

    def pages(self, path: str, *, params: Mapping[str, str], what: str) -> list[dict[str, Any]]:
        """Every result of a paginated list, following `next` (relative or absolute), at most MAX_PAGES pages and
        never the same page twice."""
        results: list[dict[str, Any]] = []
        next_url: str | None = self.url(path)
        seen: set[str] = set()
        first = True
        while next_url is not None:
            if next_url in seen or len(seen) >= MAX_PAGES:
                log.warning("AWX %s: stopped paging while %s after %d pages", self.server.name, what, len(seen))
                break
            seen.add(next_url)
            body = self._json(self._call("GET", next_url, what=what, params=params if first else None), what)
            first = False
            page = body.get("results")
            if not isinstance(page, list):
                raise errors.AwxError(f"AWX {self.server.name} sent a malformed list while {what}")
            results.extend(r for r in page if isinstance(r, dict))
            following = body.get("next")
            try:
                next_url = urljoin(self.server.url + "/", following) if isinstance(following, str) else None
            except ValueError:  # a `next` that is no URL at all
                next_url = None
            if next_url is not None and _origin(next_url) != _origin(self.server.url):
                log.warning("AWX %s: not following a next link to another host while %s", self.server.name, what)
                break  # our token goes to this server only
        return results

    def template_id(self, template: str | int, *, workflow: bool) -> int:
        """A numeric id as given; a name looked up exactly (cached), with the closest names when it is missing."""
        if isinstance(template, int):
            return template
        path = "workflow_job_templates" if workflow else "job_templates"
        noun = "workflow job template" if workflow else "job template"
        with self._lock:
            if (path, template) in self._templates:
                return self._templates[(path, template)]
        what = f"looking up {noun} {template!r}"
        found = self.pages(path, params={"name": template, "page_size": "200"}, what=what)
        matches = [t for t in found if t.get("name") == template and isinstance(t.get("id"), int)]
        if len(matches) > 1:
            ids = ", ".join(str(t["id"]) for t in matches)
            raise errors.AwxError(
                f"AWX {self.server.name} has {len(matches)} {noun}s named {template!r} "
                f"(ids {ids}, in different organizations); give the numeric id"
            )
        if not matches:
            everything = self.pages(path, params={"page_size": "200"}, what=what)
            names = [str(t.get("name")) for t in everything]
            close = difflib.get_close_matches(template, names, n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(repr(n) for n in close)}" if close else ""
            raise errors.AwxError(f"AWX {self.server.name} has no {noun} named {template!r}{hint}")
        with self._lock:
            self._templates[(path, template)] = matches[0]["id"]
        return int(matches[0]["id"])

    def launch(self, url: str, body: Mapping[str, Any], *, what: str) -> dict[str, Any]:
        """POST exactly the recorded launch request."""
        response = self._call("POST", url, json=body, what=what)
        try:
            return self._json(response, what)
        except errors.AwxError as exc:  # AWX answered, but not legibly: a job may exist all the same
            raise errors.LaunchOutcomeUnknown(str(exc), answered=True) from None

    def job(self, job: JobRef) -> dict[str, Any]:
        what = f"checking {job.noun}"
        return self._json(self._call("GET", self.url(f"{job.kind}/{job.id}"), what=what), what)

    def cancel(self, job: JobRef) -> bool:
        """Ask AWX to cancel a job: True when asked (202: it sets the cancel flag; the status changes later),
        False when it can no longer be canceled (405: it has finished)."""
        url, what = self.url(f"{job.kind}/{job.id}/cancel"), f"canceling {job.noun}"
        try:
            return self._call("POST", url, what=what, accept=frozenset({405})).status_code != 405
        except errors.LaunchOutcomeUnknown as exc:  # asked again at the next poll
            raise errors.AwxError(str(exc)) from None

    def recent(self, kind: str, *, since: datetime, **filters: str) -> list[dict[str, Any]]:
        """`jobs` or `workflow_jobs` created since `since`, newest first, filtered exactly by `filters`."""
        params = {**filters, "created__gte": since.isoformat(), "order_by": "-created", "page_size": "200"}
        what = f"listing recent {kind.replace('_', ' ')} ({', '.join(f'{k}={v}' for k, v in filters.items())})"
        return self.pages(kind, params=params, what=what)

"""Launch an AWX job template and wait for its job (protocols.md §2).

Owns the AWX REST conventions: trailing slashes on every URL (a 301 would turn the launch POST into a GET),
Bearer or Basic auth, the template found by numeric id or exact name, `ignored_fields.extra_vars` treated as a
failure, job status polled with back-off, and — after a crash — the template's recent jobs searched for one that
carries our extra vars (AWX refuses filters on `extra_vars`, so they are matched here).
Receives its `requests.Session`; builds none. The launch POST is never retried automatically.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import requests

from reconciler import errors, model

log = logging.getLogger(__name__)
TERMINAL = frozenset({"successful", "failed", "error", "canceled"})
CLOCK_SKEW = timedelta(seconds=30)  # how far AWX's clock may be behind ours when matching a job to our record
MAX_POLL_DELAY = 15.0  # well under a third of the default lease, which the waits renew between polls
_LAUNCH_URL = re.compile(r"/api/v2/job_templates/(\d+)/launch/$")


@dataclass(frozen=True, slots=True)
class Server:
    """One `[awx.NAME]` section, with its credentials resolved."""

    name: str
    url: str
    authorization: str  # the whole Authorization header value; never logged
    timeout: timedelta
    poll: timedelta


def _detail(response: requests.Response) -> str:
    """AWX's own words: DRF `{"detail": …}` or field errors `{"field": ["msg"]}`, on one line."""
    try:
        body = response.json()
    except ValueError:
        return (response.text or response.reason or "").strip().replace("\n", " ")[:200] or "no details"
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    if isinstance(body, dict):
        return "; ".join(f"{k}: {' '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in body.items())[:300]
    return str(body)[:200]


class AwxClient:
    """The few AWX endpoints reconciler needs, for one server."""

    def __init__(self, *, session: requests.Session, server: Server, request_timeout: float = 30.0) -> None:
        self._session = session
        self.server = server
        self._timeout = request_timeout
        self._templates: dict[str, int] = {}
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"{self.server.url}/api/v2/{path.strip('/')}/"

    def link(self, job_id: str) -> str:
        return f"{self.server.url}/#/jobs/playbook/{job_id}"

    def _call(self, method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": self.server.authorization, "Accept": "application/json"}
        try:
            response = self._session.request(
                method, url, headers=headers, timeout=self._timeout, allow_redirects=False, **kwargs
            )
        except requests.ConnectTimeout:
            raise errors.AwxError(f"cannot reach AWX {self.server.name} at {self.server.url} while {what}") from None
        except requests.ConnectionError as exc:
            if method == "POST" and not _never_connected(exc):
                raise errors.LaunchOutcomeUnknown(
                    f"AWX {self.server.name} dropped the connection while {what}"
                ) from None
            raise errors.AwxError(f"cannot reach AWX {self.server.name} at {self.server.url} while {what}") from None
        except requests.Timeout:
            if method == "POST":
                raise errors.LaunchOutcomeUnknown(
                    f"AWX {self.server.name} did not answer in time while {what}"
                ) from None
            raise errors.AwxError(f"AWX {self.server.name} did not answer in time while {what}") from None
        except requests.RequestException as exc:  # the request went out; the answer broke off
            error = errors.LaunchOutcomeUnknown if method == "POST" else errors.AwxError
            raise error(f"AWX {self.server.name} failed while {what}: {type(exc).__name__}") from None
        status = response.status_code
        if status < 300:
            return response
        if status == 401:
            raise errors.AwxError(
                f"AWX {self.server.name} refused the credentials while {what} (401); "
                "check the token or username/password"
            )
        if status == 403:
            raise errors.AwxError(f"AWX {self.server.name} denied {what} (403): {_detail(response)}")
        if method == "POST" and status >= 500:
            raise errors.LaunchOutcomeUnknown(f"AWX {self.server.name} answered {status} while {what}", answered=True)
        raise errors.AwxError(f"AWX {self.server.name} answered {status} while {what}: {_detail(response)}")

    def _json(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise errors.AwxError(f"AWX {self.server.name} sent a malformed answer while {what}")
        return body

    def _pages(self, url: str, *, params: Mapping[str, str], what: str) -> list[dict[str, Any]]:
        """Every result of a paginated list; `next` may be relative (AWX builds it from the request path)."""
        results: list[dict[str, Any]] = []
        next_url: str | None = url
        first = True
        while next_url is not None and len(results) < 10_000:
            body = self._json(self._call("GET", next_url, what=what, params=params if first else None), what)
            first = False
            page = body.get("results")
            if not isinstance(page, list):
                raise errors.AwxError(f"AWX {self.server.name} sent a malformed list while {what}")
            results.extend(r for r in page if isinstance(r, dict))
            following = body.get("next")
            next_url = urljoin(self.server.url + "/", following) if isinstance(following, str) and following else None
        return results

    def template_id(self, template: str | int) -> int:
        """A numeric id as given; a name looked up exactly (cached), with the closest names when it is missing."""
        if isinstance(template, int):
            return template
        with self._lock:
            if template in self._templates:
                return self._templates[template]
        what = f"looking up job template {template!r}"
        found = self._pages(self.url("job_templates"), params={"name": template, "page_size": "200"}, what=what)
        matches = [t for t in found if t.get("name") == template and isinstance(t.get("id"), int)]
        if len(matches) > 1:
            ids = ", ".join(str(t["id"]) for t in matches)
            raise errors.AwxError(
                f"AWX {self.server.name} has {len(matches)} job templates named {template!r} "
                f"(ids {ids}, in different organizations); give the numeric id as template"
            )
        if not matches:
            everything = self._pages(self.url("job_templates"), params={"page_size": "200"}, what=what)
            names = [str(t.get("name")) for t in everything]
            close = difflib.get_close_matches(template, names, n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(repr(n) for n in close)}" if close else ""
            raise errors.AwxError(f"AWX {self.server.name} has no job template named {template!r}{hint}")
        with self._lock:
            self._templates[template] = matches[0]["id"]
        return int(matches[0]["id"])

    def launch(self, url: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """POST exactly the recorded launch request."""
        what = f"launching job template {template_of(url)}"
        response = self._call("POST", url, json=body, what=what)
        try:
            return self._json(response, what)
        except errors.AwxError as exc:  # AWX answered, but not legibly: a job may exist all the same
            raise errors.LaunchOutcomeUnknown(str(exc), answered=True) from None

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json(
            self._call("GET", self.url(f"jobs/{job_id}"), what=f"checking job {job_id}"), f"checking job {job_id}"
        )

    def cancel(self, job_id: str) -> bool:
        """Ask AWX to cancel a job; False when it can no longer be canceled (it has finished)."""
        try:
            self._call("POST", self.url(f"jobs/{job_id}/cancel"), what=f"canceling job {job_id}")
        except errors.AwxError as exc:
            if "answered 405" in str(exc):
                return False
            raise
        except errors.LaunchOutcomeUnknown:
            return False
        return True

    def recent_jobs(self, template_id: int, since: datetime) -> list[dict[str, Any]]:
        params = {
            "job_template": str(template_id),
            "created__gte": since.isoformat(),
            "order_by": "-created",
            "page_size": "200",
        }
        return self._pages(self.url("jobs"), params=params, what=f"listing recent jobs of template {template_id}")


def template_of(launch_url: str) -> int | None:
    """The template id in a launch URL (`…/api/v2/job_templates/<id>/launch/`)."""
    found = _LAUNCH_URL.search(launch_url)
    return int(found.group(1)) if found else None


def _never_connected(exc: requests.ConnectionError) -> bool:
    """True when the connection was refused or not resolvable, so nothing reached AWX."""
    text = str(exc)
    return any(
        m in text
        for m in (
            "NewConnectionError",
            "Connection refused",
            "Name or service not known",
            "Failed to resolve",
            "No route to host",
        )
    )


def render_extra_vars(spec: model.AwxAction, target: model.Target) -> dict[str, model.ExtraVar]:
    values = target.placeholders()
    return {k: v.format_map(values) if isinstance(v, str) else v for k, v in spec.extra_vars.items()}


def _vars_of(job: Mapping[str, Any]) -> dict[str, Any]:
    raw = job.get("extra_vars")
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


class AwxActuator:
    """Carries out `kind = "awx"` actions over the AWX servers of the configuration."""

    def __init__(
        self,
        *,
        clients: Mapping[str, AwxClient],
        clock: Callable[[], datetime],
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._clients = clients
        self._clock = clock
        self._sleep = sleep

    def _client(self, spec: model.AwxAction) -> AwxClient:
        return self._clients[spec.server]

    def request(self, spec: model.AwxAction, target: model.Target) -> dict[str, Any]:
        """The exact launch request, resolving the template id (read-only calls to AWX only)."""
        client = self._client(spec)
        template_id = client.template_id(spec.template)
        return {
            "method": "POST",
            "url": client.url(f"job_templates/{template_id}/launch"),
            "body": {"extra_vars": render_extra_vars(spec, target)},
        }

    def launch(self, spec: model.AwxAction, request: Mapping[str, Any]) -> model.Launch:
        client = self._client(spec)
        answer = client.launch(str(request["url"]), request["body"])
        job_id = answer.get("job", answer.get("id"))
        if not isinstance(job_id, int):
            raise errors.LaunchOutcomeUnknown(f"AWX {spec.server} answered the launch without a job id", answered=True)
        ignored = answer.get("ignored_fields") or {}
        if isinstance(ignored, dict) and ignored.get("extra_vars"):
            names = ", ".join(sorted(ignored["extra_vars"])) if isinstance(ignored["extra_vars"], dict) else "?"
            raise errors.AwxError(
                f"AWX {spec.server} launched job {job_id} but ignored the extra vars {names}: enable "
                f'"Prompt on launch" for variables on job template {spec.template!r}'
            )
        return model.Launch(ref=str(job_id), link=client.link(str(job_id)))

    def find(
        self, spec: model.AwxAction, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None:
        """The job a launch whose answer was lost may have created: a job of the template created after our record
        was written, carrying our extra vars, and not already the job of another action (`exclude`)."""
        client = self._client(spec)
        request: Mapping[str, Any] = record.request or {}
        template_id = template_of(str(request.get("url", "")))
        if template_id is None:
            return None  # no launch request was ever written for this record, so none was sent
        wanted = dict(request.get("body", {}).get("extra_vars", {}))
        for job in client.recent_jobs(template_id, record.created_at - CLOCK_SKEW):
            job_id = job.get("id")
            if not isinstance(job_id, int) or str(job_id) in exclude:
                continue
            values = _vars_of(job)
            if all(values.get(k) == v for k, v in wanted.items()):
                return model.Launch(ref=str(job_id), link=client.link(str(job_id)))
        return None

    def wait(
        self, spec: model.AwxAction, record: model.ActionRecord, *, keep_alive: Callable[[], None]
    ) -> model.Finish:
        """Poll the job with back-off until it ends or the server's `timeout` (counted from the launch) passes."""
        client = self._client(spec)
        job_id = record.external_ref or ""
        deadline = (record.launched_at or self._clock()) + client.server.timeout
        delay = max(client.server.poll.total_seconds(), 0.01)
        status = "unknown"
        while True:
            try:
                job = client.job(job_id)
                status = str(job.get("status"))
            except errors.AwxError as exc:  # a blip while waiting is not the job failing: keep polling
                log.warning("watch %s: %s", record.watch, exc)
                job = {}
            if status in TERMINAL:
                return self._finish(job, job_id, status, client)
            now = self._clock()
            if now >= deadline:  # cancel it, so that a retry never runs beside it
                try:
                    if not client.cancel(job_id):  # it finished meanwhile: report how
                        job = client.job(job_id)
                        if str(job.get("status")) in TERMINAL:
                            return self._finish(job, job_id, str(job.get("status")), client)
                    outcome = "canceled it"
                except errors.AwxError as exc:
                    outcome = f"could not cancel it ({exc})"
                return model.Finish(
                    False,
                    f"job {job_id} was still {status} after {client.server.timeout}; {outcome} ({client.link(job_id)})",
                )
            keep_alive()
            self._sleep(min(delay, (deadline - now).total_seconds()))
            delay = min(delay * 1.5, max(client.server.poll.total_seconds(), MAX_POLL_DELAY))

    @staticmethod
    def _finish(job: Mapping[str, Any], job_id: str, status: str, client: AwxClient) -> model.Finish:
        elapsed = job.get("elapsed")
        took = f" in {float(elapsed):.0f}s" if isinstance(elapsed, int | float) else ""
        if status == "successful":
            return model.Finish(True, f"job {job_id} successful{took}")
        explanation = str(job.get("job_explanation") or "").strip().splitlines()
        why = f": {explanation[0][:200]}" if explanation else ""
        return model.Finish(False, f"job {job_id} {status}{took}{why} ({client.link(job_id)})")

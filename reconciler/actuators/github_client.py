"""The few GitHub REST endpoints a workflow dispatch needs, for one `[github.NAME]`, with GitHub's answers mapped
once (GitHub's REST docs: "Workflows", "Workflow runs", "Rate limits for the REST API", "Best practices"):
- `Authorization: Bearer <token>`, `Accept: application/vnd.github+json`, `X-GitHub-Api-Version: 2022-11-28`.
- Lists are paged by the `Link` header's `rel="next"` (followed on the same origin only: the token goes nowhere
  else), `per_page` at most 100.
- 401: bad credentials. 403: a missing permission (`actions:write` to dispatch), or a rate limit, told by
  `x-ratelimit-remaining: 0` (wait until `x-ratelimit-reset`, epoch seconds) or a `retry-after` (secondary limits;
  429 too). 404: no such repository or workflow, or the token cannot see it. 422: the dispatch cannot be made as
  configured (GitHub's message is quoted).
- A read that is rate-limited waits as asked (at most RATE_WAIT, through the injected sleep) and is asked again
  once; a dispatch is never re-sent here: a limit on it means nothing was dispatched, an outage.
- A dispatch whose answer never came (a timeout, a dropped connection, a gateway's 502/503/504) may have been
  acted on: its outcome is unknown and it is looked for, never sent again blindly.
Receives its `requests.Session`; builds none.
"""

from __future__ import annotations

import difflib
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import requests

from reconciler import errors
from reconciler.actuators import boundary

log = logging.getLogger(__name__)
API_VERSION = "2022-11-28"
MAX_PAGES = 20
RATE_WAIT = 60.0  # seconds a read waits for a rate limit before it is left to a later pass
LONGEST_WAIT = 3600.0  # a longer wait asked for is taken as an hour: the next pass asks again anyway
GATEWAY_STATUSES = frozenset({502, 503, 504})
_NEXT = re.compile(r'<([^>]+)>\s*;\s*rel="next"')


@dataclass(frozen=True, slots=True)
class Server:
    """One `[github.NAME]` section, with its token resolved."""

    name: str
    url: str  # https://api.github.com, or https://HOST/api/v3
    authorization: str  # the whole Authorization header value; never logged
    timeout: timedelta
    poll: timedelta


def _message(response: requests.Response) -> str:
    """GitHub's own words, on one line: `{"message": …}` (and its `errors`, when it lists them)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    text = ""
    if isinstance(body, dict):
        text = str(body.get("message") or "")
        listed = body.get("errors")
        if isinstance(listed, list) and listed:
            text += " (" + "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in listed) + ")"
    return " ".join((text or response.reason or "no details").split())[:300]


def _seconds(text: str) -> float | None:
    return float(text) if re.fullmatch(r"[0-9]{1,12}", text) else None  # not isdigit(): "²" is a digit


def _rate_wait(response: requests.Response, now: float) -> float | None:
    """How long GitHub asks to wait, when the answer is a rate limit (None otherwise), at most LONGEST_WAIT. A
    secondary limit may come without `retry-after`: then at least a minute, as GitHub's docs ask."""
    if response.status_code not in (403, 429):
        return None
    retry_after = _seconds(response.headers.get("retry-after", "").strip())
    if retry_after is not None:
        return min(retry_after, LONGEST_WAIT)
    if response.headers.get("x-ratelimit-remaining") == "0":
        reset = _seconds(response.headers.get("x-ratelimit-reset", "").strip())
        return min(max(reset - now, 0.0), LONGEST_WAIT) if reset is not None else 60.0
    if response.status_code == 429 or "rate limit" in _message(response).lower():
        return 60.0
    return None


class GitHubClient:
    def __init__(
        self,
        *,
        session: requests.Session,
        server: Server,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        request_timeout: float = 30.0,
    ) -> None:
        self._session = session
        self.server = server
        self._sleep = sleep
        self._clock = clock  # what `x-ratelimit-reset` (epoch seconds) is compared with
        self._timeout = request_timeout
        self._workflows: dict[tuple[str, str], int] = {}

    def url(self, path: str) -> str:
        return f"{self.server.url}/{path.strip('/')}"

    def _send(self, method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
        name = f"GitHub {self.server.name}"
        headers = {
            "Authorization": self.server.authorization,
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
        }
        try:
            return self._session.request(
                method, url, headers=headers, timeout=self._timeout, allow_redirects=False, **kwargs
            )
        except requests.ConnectTimeout:
            raise errors.GitHubUnavailable(f"cannot reach {name} at {self.server.url} while {what}") from None
        except requests.ConnectionError as exc:
            if method == "POST" and not boundary.never_connected(exc):
                raise errors.LaunchOutcomeUnknown(f"{name} dropped the connection while {what}") from None
            raise errors.GitHubUnavailable(f"cannot reach {name} at {self.server.url} while {what}") from None
        except requests.Timeout:
            if method == "POST":
                raise errors.LaunchOutcomeUnknown(f"{name} did not answer in time while {what}") from None
            raise errors.GitHubUnavailable(f"{name} did not answer in time while {what}") from None
        except requests.RequestException as exc:
            error = errors.LaunchOutcomeUnknown if method == "POST" else errors.GitHubUnavailable
            raise error(f"{name} failed while {what}: {type(exc).__name__}") from None

    def _call(self, method: str, url: str, *, what: str, repository: str, **kwargs: Any) -> requests.Response:
        """One request (a rate-limited read waits and is asked once more); anything but 2xx raised as one error."""
        response = self._send(method, url, what=what, **kwargs)
        wait = _rate_wait(response, self._clock().timestamp())
        if wait is not None and method == "GET" and wait <= RATE_WAIT:
            log.info("GitHub %s: rate-limited while %s; asking again in %.0fs", self.server.name, what, wait)
            self._sleep(wait)
            response = self._send(method, url, what=what, **kwargs)
            wait = _rate_wait(response, self._clock().timestamp())
        status, name = response.status_code, f"GitHub {self.server.name}"
        if status < 300:
            return response
        if wait is not None:
            raise errors.GitHubUnavailable(
                f"{name} rate-limited {what} ({_message(response)}); asked to wait {wait:.0f}s", retry_after=wait
            )
        if status == 401:
            raise errors.GitHubError(f"{name} refused the token while {what} (401: {_message(response)})")
        if status == 403:
            raise errors.GitHubError(
                f"{name} denied {what} (403: {_message(response)}); the token needs actions:write on {repository}"
            )
        if status == 404:
            raise errors.GitHubError(
                f"{name} found no {repository} while {what} (404): the repository or workflow does not exist, or "
                "the token cannot see it"
            )
        if status == 422:
            raise errors.GitHubRefused(f"{name} refused {what} (422: {_message(response)})")
        if status in GATEWAY_STATUSES and method == "POST":
            raise errors.LaunchOutcomeUnknown(f"{name} answered {status} while {what}, and may still act on it")
        if status >= 500:
            raise errors.GitHubUnavailable(f"{name} answered {status} while {what}")
        raise errors.GitHubError(f"{name} answered {status} while {what}: {_message(response)}")

    def _json(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            body = response.json()
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict):
            raise errors.GitHubError(f"GitHub {self.server.name} sent a malformed answer while {what}")
        return body

    def pages(self, path: str, key: str, *, params: Mapping[str, str], what: str, repository: str) -> list[Any]:
        """The items under `key` of every page, following `Link: <…>; rel="next"` on this server only."""
        items: list[Any] = []
        url: str | None = self.url(path)
        seen: set[str] = set()
        origin = urlsplit(self.server.url)[:2]
        query: Mapping[str, str] | None = params  # the next links carry their own
        while url is not None and url not in seen and len(seen) < MAX_PAGES:
            seen.add(url)
            response = self._call("GET", url, what=what, repository=repository, params=query)
            query = None
            page = self._json(response, what).get(key)
            if not isinstance(page, list):
                raise errors.GitHubError(f"GitHub {self.server.name} sent a malformed list while {what}")
            items.extend(page)
            found = _NEXT.search(response.headers.get("link", ""))
            url = found.group(1) if found and urlsplit(found.group(1))[:2] == origin else None
        return items

    def workflow_id(self, repository: str, workflow: str | int) -> int:
        """A numeric id as given; a file name (`build-main.yaml`) read directly; a name looked up among the
        repository's workflows exactly, as trigger-ci-action does (cached), with the closest names when missing."""
        if isinstance(workflow, int):
            return workflow
        if workflow.isascii() and workflow.isdigit():  # an id written as a string
            return int(workflow)
        key = (repository, workflow)
        if key in self._workflows:
            return self._workflows[key]
        what = f"looking up workflow {workflow!r} of {repository}"
        if workflow.endswith((".yml", ".yaml")):
            path = f"repos/{repository}/actions/workflows/{quote(workflow, safe='')}"
            found = self._json(self._call("GET", self.url(path), what=what, repository=repository), what).get("id")
            if not isinstance(found, int) or isinstance(found, bool):
                raise errors.GitHubError(f"GitHub {self.server.name} sent a workflow without an id while {what}")
            self._workflows[key] = found
            return found
        listed = self.pages(
            f"repos/{repository}/actions/workflows",
            "workflows",
            params={"per_page": "100"},
            what=what,
            repository=repository,
        )
        matches = [w["id"] for w in listed if isinstance(w, dict) and w.get("name") == workflow and "id" in w]
        if not matches:
            names = [str(w.get("name")) for w in listed if isinstance(w, dict)]
            close = difflib.get_close_matches(workflow, names, n=3, cutoff=0.4)
            hint = f"; closest: {', '.join(repr(n) for n in close)}" if close else f"; it has {len(names)} workflows"
            raise errors.GitHubRefused(f"{repository} has no workflow named {workflow!r}{hint}")
        if len(matches) > 1:
            raise errors.GitHubRefused(
                f"{repository} has {len(matches)} workflows named {workflow!r} (ids "
                f"{', '.join(map(str, matches))}); give its file name or id"
            )
        self._workflows[key] = int(matches[0])
        return int(matches[0])

    def dispatch(self, url: str, body: Mapping[str, Any], *, what: str, repository: str) -> dict[str, Any] | None:
        """POST the recorded dispatch once: the run's details (200), or None (204, an older GitHub Enterprise). A
        GitHub Enterprise that refuses the `return_run_details` key (422, GHES 3.19; benc-uk/workflow-dispatch#86)
        dispatched nothing: the dispatch is sent once more without it, and answers 204."""
        try:
            response = self._call("POST", url, what=what, repository=repository, json=body)
        except errors.GitHubRefused as exc:
            if "return_run_details" not in str(exc) or "return_run_details" not in body:
                raise
            plain = {k: v for k, v in body.items() if k != "return_run_details"}
            response = self._call("POST", url, what=what, repository=repository, json=plain)
        if response.status_code == 204:
            return None
        try:
            return self._json(response, what)
        except errors.GitHubError as exc:  # GitHub answered, not legibly: a run may exist all the same
            raise errors.LaunchOutcomeUnknown(str(exc), answered=True) from None

    def run(self, repository: str, run_id: int) -> dict[str, Any]:
        what = f"checking run {run_id} of {repository}"
        path = f"repos/{repository}/actions/runs/{run_id}"
        return self._json(self._call("GET", self.url(path), what=what, repository=repository), what)

    def runs(self, repository: str, workflow_id: int, *, since: datetime, branch: str | None) -> list[dict[str, Any]]:
        """The workflow's `workflow_dispatch` runs created since `since` (newest first)."""
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        params = {"event": "workflow_dispatch", "created": f">={stamp}", "per_page": "100"}
        if branch:
            params["branch"] = branch
        what = f"listing the runs of workflow {workflow_id} of {repository}"
        found = self.pages(
            f"repos/{repository}/actions/workflows/{workflow_id}/runs",
            "workflow_runs",
            params=params,
            what=what,
            repository=repository,
        )
        return [r for r in found if isinstance(r, dict)]

    def cancel(self, repository: str, run_id: int) -> bool:
        """Ask GitHub to cancel a run: True when asked (202; it completes as cancelled later), False when it has
        already completed (409)."""
        url, what = (
            self.url(f"repos/{repository}/actions/runs/{run_id}/cancel"),
            f"cancelling run {run_id} of {repository}",
        )
        try:
            response = self._send("POST", url, what=what)
        except errors.LaunchOutcomeUnknown as exc:  # asked again at the next poll
            raise errors.GitHubError(str(exc)) from None
        if response.status_code == 409:
            return False
        if response.status_code >= 300:
            raise errors.GitHubError(
                f"GitHub {self.server.name} answered {response.status_code} while {what} ({_message(response)}); "
                "cancelling needs actions:write"
            )
        return True

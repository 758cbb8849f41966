"""A stateful fake of GitHub's Actions REST API (workflow dispatch, runs, cancel), in-process on 127.0.0.1, over HTTP.

`base` plays https://api.github.com; `base + "/api/v3"` plays GitHub Enterprise Server and routes the same (URLs in
answers then carry the prefix). Sources (where they disagree with this file, this file is wrong):
* docs.github.com/rest/actions/workflows and /rest/actions/workflow-runs (list, get, dispatch, runs, cancel; path and
  query parameters; per_page default 30, max 100; `workflow_id` or the workflow's file name), and the changelog
  github.blog/changelog/2026-02-19-workflow-dispatch-api-now-returns-run-ids: with `return_run_details: true` the
  dispatch answers 200 `{"workflow_run_id", "run_url", "html_url"}`, without it 204 as before (an older GHES always
  204). At most 25 inputs (GitHub's current workflow_dispatch limit, formerly 10).
* Error texts as GitHub sends them, seen in public issue threads: "Workflow does not have 'workflow_dispatch'
  trigger" (benc-uk/workflow-dispatch#46, #81, llm-d/llm-d#1572: 422), 'Unexpected inputs provided: ["x"]'
  (peter-evans/slash-command-dispatch#115, benc-uk/workflow-dispatch#80), "No ref found for: main"
  (convictional/trigger-workflow-and-wait#25, #44: 422), "Cannot cancel a workflow run that is completed."
  (technote-space/auto-cancel-redundant-workflow#68, Homebrew/actions#70: 409), "Bad credentials" / "Requires
  authentication" (401), `"status": "422"` as a string in the body (fcetool/fcetool#1), 504 "We couldn't respond to
  your request in time. ..." (GitHub's timeout answer); the unsupported X-GitHub-Api-Version 400
  (expipiplus1/update-nix-fetchgit#79).
* docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api (github/docs content/rest/using-the-rest-api/
  rate-limits-for-the-rest-api.md): x-ratelimit-limit/-remaining/-used/-reset (UTC epoch seconds)/-resource on every
  answer; primary limit → 403 or 429 with remaining 0, wait until reset; secondary → 403 or 429 with a message saying
  so and maybe `retry-after`. Texts "API rate limit exceeded for user ID 1." and "You have exceeded a secondary rate
  limit. Please wait a few minutes before you try again." as clients' fixtures quote them.
* docs.github.com/rest/using-the-rest-api/troubleshooting-the-rest-api: an unsupported method or a trailing slash → 404.
* `Link` URLs name the repository by id (https://api.github.com/repositories/15111821/actions/workflows?page=2, and
  cli/cli's run-list tests), so /repositories/<id>/... routes too. The `created` qualifier: docs.github.com
  search-github/.../understanding-the-search-syntax (>, >=, <, <=, A..B, A..*, *..B; a date covers its whole day).
* Runs list without inputs (GitHub does not return them): a lost dispatch answer can only be matched by workflow,
  event, branch, actor and time.
Assumed: the 400/422 texts for a malformed body ("Problems parsing JSON", "Invalid request. ..."), the >25 inputs text,
a dispatch on a known branch not in the workflow's `branches` → the trigger 422, a missing Authorization → 401 for every
repository (GitHub would serve public ones anonymously), 500 → {"message": "Server Error"}, a cancel taking effect
after `cancel_delay` further GETs of the run, run/workflow ids and request ids as numbers shaped like GitHub's (run ids
past 2**32). Not modelled: required inputs, input types, permissions (403 without actions:write), repository-wide
filters other than event/branch/actor/status/created, re-runs, jobs, logs.
Runs move only when their detail is GET (see `script`), never by wall time. Kinds for faults (Kind): workflows (list and
get), dispatch, runs (both run lists), run (GET of a run), cancel, any.
Controls: add_repository, add_tag, add_workflow, script, on_complete, set_run, dispatch_by_hand, old_enterprise,
fail_next, rate_limit_next, hang_next/wait_hanging/release, and the attributes clock, api_versions (("2022-11-28",) for
an older GHES), rate_limit (per hour; past it a primary 403 until x-ratelimit-reset), cancel_delay, list_lag.
Recorded: requests, dispatches (HTTP only), runs, callback_errors, count().
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.github_base import (
    API_VERSIONS,
    CONCLUSIONS,
    DEFAULT_VERSION,
    DOCS,
    KINDS,
    RATE_DOCS,
    ROUTE_DOCS,
    ROUTES,
    SECONDARY,
    STATUSES,
    Dispatch,
    Fault,
    Handler,
    Http,
    Kind,
    Recorded,
    Reply,
    RunsMixin,
    error,
    fault_reply,
    json_reply,
    page,
    stamp,
)
from tests.support.loopback import LoopbackServer

__all__ = ["CONCLUSIONS", "STATUSES", "Dispatch", "FakeGitHub", "Kind", "Recorded"]

LOGIN = "reconciler-bot"
STACK_INPUTS = ("be_namespace", "be_image_tag", "fe_namespace", "fe_image_tag", "stack_namespace")


class FakeGitHub(RunsMixin):
    """GitHub's Actions API for the workflows, dispatches and runs of the repositories added; faults injectable."""

    def __init__(self, token: str, *, clock: Callable[[], datetime] | None = None, login: str = LOGIN) -> None:
        self.token, self.login = token, login
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.api_versions: tuple[str, ...] = API_VERSIONS  # an older GHES: ("2022-11-28",)
        self.rate_limit = 5000  # requests per hour for the token; past it every request is a primary 403 until reset
        self.cancel_delay = 1  # GETs of a run after a cancel that still show it running
        self.list_lag = 0  # run-list requests a new run stays out of (GitHub's lists lag behind a dispatch)
        self.requests: list[Recorded] = []
        self.dispatches: list[Dispatch] = []  # accepted over HTTP; dispatch_by_hand is not here
        self.runs: dict[int, dict[str, Any]] = {}  # id -> the run (API URL fields are added when answered)
        self.callback_errors: list[BaseException] = []  # raised by on_complete callbacks; the answer still goes out
        self.lock = threading.RLock()
        self._repos: dict[str, dict[str, Any]] = {}  # lower-cased full name -> repository (with branches, tags)
        self._workflows: dict[int, dict[str, Any]] = {}
        self._users = {login: 48151623}
        self._next_repo, self._next_workflow, self._next_run = 641234567, 112233441, 21000000001
        self._old_enterprise = False
        self._refuses_run_details = False
        self._faults: list[Fault] = []
        self._limits: list[Fault] = []
        self._hangs: list[Fault] = []
        self._window = [0, 0]  # [used, reset epoch] of the token's primary rate limit
        self._served = 0
        self._cond = threading.Condition()
        self._gate = threading.Event()
        self._hanging = 0
        self._closed = False
        self._http = LoopbackServer(Handler, owner=self, name="fake-github")
        self._init_runs()
        self.base = ""

    def start(self) -> FakeGitHub:
        self._closed = False
        self.base = self._http.start()
        return self

    def stop(self) -> None:
        self._closed = True  # hangs end with the fake
        self.release()
        self._http.stop()

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def add_repository(self, full_name: str, *, branches: Sequence[str] = ("master",)) -> int:
        """Add a repository ("owner/name", matched case-insensitively as GitHub does) with its branches; its id."""
        owner, sep, name = full_name.partition("/")
        if not (owner and sep and name) or "/" in name:
            raise ValueError(f"not owner/name: {full_name!r}")
        with self.lock:
            if full_name.lower() in self._repos:
                raise ValueError(f"repository {full_name} exists")
            rid, self._next_repo = self._next_repo, self._next_repo + 1
            self._repos[full_name.lower()] = {
                "id": rid, "node_id": f"R_kgDO{rid:08X}", "name": name, "full_name": full_name,
                "owner": {"login": owner, "type": "Organization"}, "private": False,
                "html_url": f"https://github.com/{full_name}", "branches": set(branches), "tags": set(),
            }  # fmt: skip
            return rid

    def repository_id(self, full_name: str) -> int:
        """The id GitHub's `Link` headers name the repository by (https://api.github.com/repositories/<id>/...)."""
        with self.lock:
            return int(self._repo(full_name)["id"])

    def add_tag(self, repo: str, name: str) -> None:
        with self.lock:
            self._repo(repo)["tags"].add(name)

    def add_workflow(
        self, repo: str, name: str = "build main", path: str = ".github/workflows/build-main.yaml",
        inputs: Sequence[str] = STACK_INPUTS, dispatchable: bool = True, branches: Sequence[str] = ("master",),
    ) -> int:  # fmt: skip
        """Add a workflow file; `dispatchable`: it has the workflow_dispatch trigger on `branches` (which the
        repository then has too); its id."""
        if len(inputs) > 25:
            raise ValueError("a workflow_dispatch trigger declares at most 25 inputs")
        with self.lock:
            record, now = self._repo(repo), stamp(self.clock())
            wid, self._next_workflow = self._next_workflow, self._next_workflow + 1
            record["branches"].update(branches)
            self._workflows[wid] = {
                "id": wid, "node_id": f"W_kwDO{wid:010X}", "name": name, "path": path, "state": "active",
                "created_at": now, "updated_at": now, "repo": record["full_name"].lower(),
                "inputs": tuple(inputs), "dispatchable": dispatchable, "branches": set(branches), "number": 0,
            }  # fmt: skip
            return wid

    def old_enterprise(self, on: bool = True, *, refuses_run_details: bool = False) -> None:
        """An older GHES: the dispatch answers 204 with no body even when asked for the run's details. With
        `refuses_run_details`, as GHES 3.19 does, a body carrying `return_run_details` is refused and nothing is
        dispatched (422 '"return_run_details" is not a permitted key.', benc-uk/workflow-dispatch#86)."""
        with self.lock:
            self._old_enterprise = on
            self._refuses_run_details = refuses_run_details

    def fail_next(self, count: int, status: int = 500, kind: Kind = "any", body: Any = None,
                  headers: Mapping[str, str] | None = None, *, creates: bool = False) -> None:  # fmt: skip
        """Answer the next `count` requests of `kind` with `status` (before auth). body: Mapping → JSON, str/bytes →
        as is; None → GitHub's JSON for the status. creates: the request is processed all the same (a dispatch
        creates its run, as behind a gateway that timed out); otherwise nothing happens."""
        if count < 1 or kind not in KINDS:
            raise ValueError(f"bad fault: count={count} kind={kind!r}")
        with self.lock:
            self._faults.append(Fault(kind, count, status, body, dict(headers or {}), creates=creates))

    def rate_limit_next(self, kind: Kind, count: int = 1, *, secondary: bool = False, status: int = 403,
                        wait: int = 5) -> None:  # fmt: skip
        """The next `count` requests of `kind` hit a rate limit and are not processed. Primary: `status` with
        x-ratelimit-remaining 0 and x-ratelimit-reset `wait` seconds ahead by the clock. Secondary: `status` (403 or
        429) with `retry-after: wait` (wait < 0: no retry-after, as GitHub sometimes sends)."""
        if count < 1 or kind not in KINDS or status not in (403, 429):
            raise ValueError(f"bad rate limit: kind={kind!r} count={count} status={status}")
        with self.lock:
            limit = "secondary" if secondary else "primary"
            self._limits.append(Fault(kind, count, status, limit=limit, wait=wait))

    def hang_next(self, kind: Kind, count: int = 1, *, after_create: bool = False) -> None:
        """Hold the next `count` requests of `kind` unanswered until release() or stop(). after_create: process the
        request first (a dispatch creates its run), then withhold the answer: a lost answer."""
        if count < 1 or kind not in KINDS:
            raise ValueError(f"bad hang: count={count} kind={kind!r}")
        with self.lock:
            self._hangs.append(Fault(kind, count, after=after_create))

    def release(self) -> None:
        """Let every request hanging now answer (late: its client may be gone)."""
        with self._cond:
            self._gate.set()
            self._gate, self._hanging = threading.Event(), 0

    def wait_hanging(self, timeout: float = 5.0, count: int = 1) -> bool:
        """Wait until at least `count` requests are hanging."""
        with self._cond:
            return self._cond.wait_for(lambda: self._hanging >= count, timeout)

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self.lock:
            seen = list(self.requests)
        return sum(1 for r in seen if method in (None, r.method) and r.path.startswith(path_prefix or ""))

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        hdrs = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests.append(Recorded(method, target, hdrs, body))
        path = urlsplit(target).path
        prefix = "/api/v3" if path.startswith("/api/v3/") else ""
        path, api = path.removeprefix(prefix), self.base + prefix
        found = next(((m, route, kind) for pattern, verb, route, kind in ROUTES
                      if (m := pattern.match(path)) and verb == method), None)  # fmt: skip
        kinds = (found[2],) if found else ("unrouted",)
        hang = self._take(self._hangs, kinds)
        if hang is not None and not hang.after:
            self._block()
        fault, limit = self._take(self._faults, kinds), self._take(self._limits, kinds)
        extra: dict[str, str] = {}
        if fault is not None and not fault.creates:
            reply = fault_reply(fault)
        elif limit is not None:
            reply, extra = self._limited(limit)
        else:
            reply = self._github(method, target, hdrs, body, found, api)
            if fault is not None:
                reply = fault_reply(fault)
        self._fire()  # callbacks belong to the processing: they run even when the answer is then withheld
        if hang is not None and hang.after:
            self._block()
        reply.headers |= self._common(hdrs, authenticated=reply.status != 401) | extra
        return reply

    def _github(self, method: str, target: str, hdrs: dict[str, str], body: bytes,
                found: tuple[Any, str, str] | None, api: str) -> Reply:  # fmt: skip
        try:
            self._authenticate(hdrs.get("authorization", ""))
            version = hdrs.get("x-github-api-version", DEFAULT_VERSION)
            if version not in self.api_versions:
                listed = ", ".join(f'"{v}"' + " (most recent)" * (i == 0) for i, v in enumerate(self.api_versions))
                message = f'The version you specified in the "X-GitHub-Api-Version" request header, "{version}", is '
                message += f"not a supported version. The following versions are currently supported: {listed}."
                raise error(400, message, f"{DOCS}/overview/api-versions")
            with self.lock:
                if self._window[0] >= self.rate_limit and int(self.clock().timestamp()) < self._window[1]:
                    return self._limited(Fault("any", 1, 403, limit="primary", wait=-1))[0]
            if found is None:
                raise error(404, "Not Found")
            m, route, _ = found
            params = parse_qsl(urlsplit(target).query, keep_blank_values=True)
            with self.lock:
                return self._route(route, m, params, body, api)
        except Http as http:
            return http.reply

    def _route(self, route: str, m: Any, params: list[tuple[str, str]], body: bytes, api: str) -> Reply:
        docs = ROUTE_DOCS[route]
        repo = self._repo(m["rid"] or f"{m['owner']}/{m['name']}", missing=error(404, "Not Found", docs))
        rest = m.string[m.end("rid") if m["rid"] else m.end("name") :]
        link_base = f"{api}/repositories/{repo['id']}{rest}"
        if route == "workflows":
            items = [w for w in self._workflows.values() if w["repo"] == repo["full_name"].lower()]
            chunk, hdrs = page(items, params, link_base)
            views = [self._workflow_view(w, api) for w in chunk]
            return json_reply(200, {"total_count": len(items), "workflows": views}, hdrs)
        if route in ("workflow", "dispatch", "workflow_runs"):
            wf = self._workflow(repo, m["wf"], docs)
            if route == "workflow":
                return json_reply(200, self._workflow_view(wf, api))
            if route == "dispatch":
                return self._dispatch(repo, wf, body, api)
            return self._list_runs(repo, wf, params, link_base, api)
        if route == "runs":
            return self._list_runs(repo, None, params, link_base, api)
        run = self.runs.get(int(m["run"]))
        if run is None or run["repository"]["id"] != repo["id"]:
            raise error(404, "Not Found", docs)
        if route == "run":
            self._advance(run)
            return json_reply(200, self._run_view(run, api))
        return self._cancel(run)

    def _authenticate(self, header: str) -> None:
        scheme, _, credentials = header.strip().partition(" ")
        if not header.strip():
            raise error(401, "Requires authentication")
        if scheme.lower() in ("bearer", "token") and credentials.strip() == self.token:
            return
        if scheme.lower() == "basic":  # user + token, as informaticsmatters/trigger-ci-action sends it
            try:
                if base64.b64decode(credentials.strip(), validate=True).decode().partition(":")[2] == self.token:
                    return
            except (binascii.Error, UnicodeDecodeError):
                pass
        raise error(401, "Bad credentials")

    def _limited(self, limit: Fault) -> tuple[Reply, dict[str, str]]:
        if limit.limit == "secondary":
            extra = {"retry-after": str(limit.wait)} if limit.wait >= 0 else {}
            return error(limit.status, SECONDARY, f"{RATE_DOCS}#about-secondary-rate-limits").reply, extra
        with self.lock:
            reset = int(self.clock().timestamp()) + limit.wait if limit.wait >= 0 else self._window[1]
            uid = self._users[self.login]
        extra = {
            "x-ratelimit-remaining": "0",
            "x-ratelimit-used": str(self.rate_limit),
            "x-ratelimit-reset": str(reset),
        }
        return error(limit.status, f"API rate limit exceeded for user ID {uid}.", RATE_DOCS).reply, extra

    def _common(self, hdrs: Mapping[str, str], *, authenticated: bool) -> dict[str, str]:
        """The headers GitHub puts on every answer; an authenticated request counts against the token's hour."""
        with self.lock:
            now = int(self.clock().timestamp())
            if now >= self._window[1]:
                self._window = [0, now + 3600]
            self._window[0] += authenticated
            used, reset = self._window
            self._served += 1
            digest = hashlib.sha1(f"{self.base}{self._served}".encode()).hexdigest().upper()
        version = hdrs.get("x-github-api-version", DEFAULT_VERSION)
        return {
            "x-ratelimit-limit": str(self.rate_limit if authenticated else 60),
            "x-ratelimit-remaining": str(max(self.rate_limit - used, 0) if authenticated else 59),
            "x-ratelimit-reset": str(reset), "x-ratelimit-used": str(used if authenticated else 1),
            "x-ratelimit-resource": "core", "x-github-media-type": "github.v3; format=json",
            "x-github-request-id": f"{digest[:4]}:{digest[4:9]}:{digest[9:16]}:{digest[16:23]}:{self._served:08X}",
            "x-github-api-version-selected": version if version in self.api_versions else DEFAULT_VERSION,
        }  # fmt: skip

    def _take(self, queue: list[Fault], kinds: tuple[str, ...]) -> Fault | None:
        with self.lock:
            found = next((f for f in queue if f.kind in (*kinds, "any")), None)
            if found is not None:
                found.count -= 1
                if found.count == 0:
                    queue.remove(found)
            return found

    def _block(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._hanging += 1
            gate = self._gate
            self._cond.notify_all()
        gate.wait()

    def _repo(self, key: str, missing: Exception | None = None) -> dict[str, Any]:
        found = self._repos.get(key.lower()) or next((r for r in self._repos.values() if str(r["id"]) == key), None)
        if found is None:
            raise missing or KeyError(f"no repository {key}")
        return found

    def _workflow(self, repo: dict[str, Any], key: str, docs: str) -> dict[str, Any]:
        for wf in self._workflows.values():
            if wf["repo"] == repo["full_name"].lower() and key in (str(wf["id"]), wf["path"].rsplit("/", 1)[-1]):
                return wf
        raise error(404, "Not Found", docs)

    def _workflow_view(self, wf: dict[str, Any], api: str) -> dict[str, Any]:
        full = self._repos[wf["repo"]]["full_name"]
        view = {k: wf[k] for k in ("id", "node_id", "name", "path", "state", "created_at", "updated_at")}
        return view | {"url": f"{api}/repos/{full}/actions/workflows/{wf['id']}",
                       "html_url": f"https://github.com/{full}/blob/master/{wf['path']}",
                       "badge_url": f"https://github.com/{full}/actions/workflows/{wf['path'].rsplit('/', 1)[-1]}"
                                    "/badge.svg"}  # fmt: skip

"""Building blocks of the fake GitHub Actions API (see tests/fakes/github.py for what is faithful and where it comes
from): routes, error bodies, the `created` search qualifier, `Link` paging, timestamps, the HTTP handler, and the
workflow runs themselves (RunsMixin)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal, NamedTuple, get_args
from urllib.parse import urlencode

Kind = Literal["workflows", "dispatch", "runs", "run", "cancel", "any"]
KINDS: tuple[str, ...] = get_args(Kind)
STATUSES = ("requested", "queued", "pending", "waiting", "in_progress", "completed")  # workflow-run `status`
CONCLUSIONS = ("success", "failure", "cancelled", "timed_out", "action_required", "neutral", "skipped", "stale",
               "startup_failure")  # fmt: skip
API_VERSIONS = ("2026-03-10", "2022-11-28")  # what api.github.com accepts; an older GHES knows only the last
DEFAULT_VERSION = "2022-11-28"  # what GitHub applies when the request names none
MAX_INPUTS = 25
DOCS = "https://docs.github.com/rest"
_WF_DOCS, _RUN_DOCS = f"{DOCS}/actions/workflows", f"{DOCS}/actions/workflow-runs"
ROUTE_DOCS = {
    "workflows": f"{_WF_DOCS}#list-repository-workflows", "workflow": f"{_WF_DOCS}#get-a-workflow",
    "dispatch": f"{_WF_DOCS}#create-a-workflow-dispatch-event",
    "workflow_runs": f"{_RUN_DOCS}#list-workflow-runs-for-a-workflow",
    "runs": f"{_RUN_DOCS}#list-workflow-runs-for-a-repository", "run": f"{_RUN_DOCS}#get-a-workflow-run",
    "cancel": f"{_RUN_DOCS}#cancel-a-workflow-run",
}  # fmt: skip
RATE_DOCS = f"{DOCS}/overview/rate-limits-for-the-rest-api"
SECONDARY = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
TIMEOUT = ("We couldn't respond to your request in time. Sorry about that. Please try resubmitting your request and "
           "contact us if the problem persists.")  # fmt: skip
_REPO = r"(?:repos/(?P<owner>[^/]+)/(?P<name>[^/]+)|repositories/(?P<rid>\d+))"
ROUTES: list[tuple[re.Pattern[str], str, str, str]] = [  # (path, method, route, kind for faults)
    (re.compile(rf"^/{_REPO}/actions/{path}$"), method, route, kind)
    for path, method, route, kind in [
        (r"workflows", "GET", "workflows", "workflows"),
        (r"workflows/(?P<wf>[^/]+)", "GET", "workflow", "workflows"),
        (r"workflows/(?P<wf>[^/]+)/dispatches", "POST", "dispatch", "dispatch"),
        (r"workflows/(?P<wf>[^/]+)/runs", "GET", "workflow_runs", "runs"),
        (r"runs", "GET", "runs", "runs"),
        (r"runs/(?P<run>\d+)", "GET", "run", "run"),
        (r"runs/(?P<run>\d+)/cancel", "POST", "cancel", "cancel"),
    ]
]


class Recorded(NamedTuple):
    method: str
    path: str  # as received, query string and any /api/v3 prefix included
    headers: dict[str, str]  # keys lower-cased
    body: bytes


class Dispatch(NamedTuple):
    repo: str  # "owner/name" as added
    workflow_id: int
    ref: str  # as sent
    inputs: dict[str, Any]
    run_id: int


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class Http(Exception):
    """An error answer, raised from deep inside a handler."""

    def __init__(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.reply = json_reply(status, payload, headers)


@dataclass
class Fault:
    kind: str
    count: int
    status: int = 500
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    after: bool = False  # hangs: process the request first, then withhold the answer
    creates: bool = False  # errors: the request is processed all the same (a dispatch creates its run)
    limit: str = ""  # "primary" or "secondary" rate limit
    wait: int = 0  # seconds to x-ratelimit-reset (primary) or retry-after (secondary)


@dataclass
class Script:
    conclusion: str
    polls: int
    count: int | None = None  # None: every later run
    seen: int = 0


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json; charset=utf-8",
                                                        **(headers or {})})  # fmt: skip


def error(status: int, message: str, docs: str = DOCS, headers: Mapping[str, str] | None = None) -> Http:
    """GitHub's error body: message, documentation_url and (since 2024) the status as a string."""
    return Http(status, {"message": message, "documentation_url": docs, "status": str(status)}, headers)


def fault_reply(fault: Fault) -> Reply:
    """A scripted error answer: body Mapping → JSON, str/bytes → as is; None → GitHub's JSON for the status."""
    if isinstance(fault.body, Mapping):
        return json_reply(fault.status, fault.body, fault.headers)
    if fault.body is not None:
        data = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
        return Reply(fault.status, data, {"Content-Type": "text/html; charset=utf-8", **fault.headers})
    messages = {403: "Resource not accessible by integration", 500: "Server Error", 502: TIMEOUT, 504: TIMEOUT}
    message = messages.get(fault.status) or HTTPStatus(fault.status).phrase
    return json_reply(fault.status, {"message": message}, fault.headers)


def stamp(moment: datetime) -> str:
    """GitHub's timestamps: UTC, whole seconds, `Z`."""
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _bounds(text: str) -> tuple[datetime, datetime]:
    """[lo, hi) a search date or time covers: a whole day for YYYY-MM-DD, one second for a time."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?", text):
        raise ValueError(text)
    start = parse_stamp(text)
    return start, start + (timedelta(days=1) if "T" not in text else timedelta(seconds=1))


def created_filter(expr: str) -> Callable[[datetime], bool]:
    """The `created` qualifier of GitHub's search syntax: >, >=, <, <=, A..B, A..*, *..B or one date/time; anything
    else → 422 (assumed)."""
    try:
        op = next((op for op in (">=", "<=", ">", "<") if expr.startswith(op)), "")
        if op or ".." not in expr:
            lo, hi = _bounds(expr[len(op) :])
            first, last = {">=": (lo, None), ">": (hi, None), "<": (None, lo), "<=": (None, hi)}.get(op, (lo, hi))
        else:
            text_first, _, text_last = expr.partition("..")
            first = None if text_first == "*" else _bounds(text_first)[0]
            last = None if text_last == "*" else _bounds(text_last)[1]
    except ValueError:
        raise error(422, f"fake GitHub cannot read the created qualifier {expr!r}") from None
    return lambda t: (first is None or t >= first) and (last is None or t < last)


def page(items: list[Any], params: list[tuple[str, str]], link_base: str) -> tuple[list[Any], dict[str, str]]:
    """GitHub paging: per_page (default 30, at most 100), page (from 1; past the end → empty); a `Link` header
    (prev, next, last, first) when there is more than one page, on `link_base` (GitHub names the repository by id:
    https://api.github.com/repositories/<id>/...), the request's other parameters kept in order."""
    query = dict(params)
    per_page = min(_int(query.get("per_page"), 30), 100)
    number = _int(query.get("page"), 1)
    pages = max(1, -(-len(items) // per_page))
    chunk = items[(number - 1) * per_page : number * per_page]
    if pages == 1:
        return chunk, {}

    def url(n: int) -> str:
        return f"{link_base}?{urlencode([(k, v) for k, v in params if k != 'page'] + [('page', str(n))])}"

    links = [(number - 1, "prev")] if number > 1 else []
    links += [(number + 1, "next"), (pages, "last")] if number < pages else []
    links += [(1, "first")] if number > 1 else []
    return chunk, {"Link": ", ".join(f'<{url(n)}>; rel="{rel}"' for n, rel in links)}


def _int(raw: str | None, default: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if value > 0 else default


def dispatch_body(body: bytes, docs: str) -> tuple[str, dict[str, Any], bool]:
    """(ref, inputs, return_run_details) of a dispatch body, or GitHub's 400/422 for a bad one."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        raise error(400, "Problems parsing JSON", docs) from None
    if not isinstance(data, dict):
        raise error(400, "Problems parsing JSON", docs)
    if "ref" not in data:
        raise error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.', docs)
    ref, inputs, details = data["ref"], data.get("inputs", {}), data.get("return_run_details", False)
    for key, value, kind, ok in [("ref", ref, "string", isinstance(ref, str)),
                                 ("inputs", inputs, "object", isinstance(inputs, dict) or inputs is None),
                                 ("return_run_details", details, "boolean", isinstance(details, bool))]:  # fmt: skip
        if not ok:
            raise error(422, f"Invalid request.\n\nFor 'properties/{key}', {json.dumps(value)} is not a {kind}.", docs)
    if len(inputs or {}) > MAX_INPUTS:
        raise error(422, f"Invalid request.\n\nFor 'properties/inputs', more than {MAX_INPUTS} properties.", docs)
    return ref, dict(inputs or {}), details


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall per request

    def do_GET(self) -> None:
        owner = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply: Reply = owner.handle(self.command, self.path, dict(self.headers.items()), body)
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            if reply.status not in (204, 304):  # RFC 9110 §8.6: no Content-Length on a 204
                self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body if reply.status not in (204, 304) else b"")
        except (BrokenPipeError, ConnectionResetError):  # a hung answer whose client is gone
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def version_string(self) -> str:
        return "github.com"

    def log_message(self, format: str, *args: Any) -> None:
        pass


class RunsMixin:
    """Workflow runs: created by a dispatch, moved on by GETs of the run (`script`), cancelled a little later, listed
    newest first without inputs, announced once to `on_complete` callbacks when they turn completed."""

    lock: threading.RLock
    clock: Callable[[], datetime]
    login: str
    runs: dict[int, dict[str, Any]]
    dispatches: list[Dispatch]
    callback_errors: list[BaseException]
    cancel_delay: int
    list_lag: int
    _workflows: dict[int, dict[str, Any]]
    _users: dict[str, int]
    _next_run: int
    _old_enterprise: bool
    _refuses_run_details: bool
    _repo: Callable[..., dict[str, Any]]

    def _init_runs(self) -> None:
        self._scripts: list[Script] = []
        self._default = Script("success", 2)
        self._progress: dict[int, Script] = {}
        self._cancels: dict[int, int] = {}  # run id -> GETs left before a requested cancel shows
        self._hidden: dict[int, int] = {}  # run id -> run-list requests it stays out of
        self._callbacks: list[Callable[[dict[str, Any]], None]] = []
        self._announced: set[int] = set()
        self._due: dict[int, list[dict[str, Any]]] = {}  # thread id -> runs it completed, callbacks not yet called

    def script(self, conclusion: str = "success", polls: int = 2, count: int | None = None) -> None:
        """Later runs stay `queued` (first GET of the run) then `in_progress` for `polls` GETs of the run in all, then
        are `completed` with `conclusion`. count=None: every later run (the new default); count=N: the next N only."""
        if conclusion not in CONCLUSIONS or polls < 0 or (count is not None and count < 1):
            raise ValueError(f"bad script: conclusion={conclusion!r} polls={polls} count={count}")
        with self.lock:
            if count is None:
                self._default = Script(conclusion, polls)
            else:
                self._scripts.append(Script(conclusion, polls, count))

    def on_complete(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call `callback(run)` (a copy) once per run when it turns completed, in the thread that completed it (the
        GET of the run, or set_run) before that GET is answered. Exceptions go to `callback_errors`."""
        with self.lock:
            self._callbacks.append(callback)

    def set_run(self, run_id: int, status: str | None = None, conclusion: str | None = None) -> None:
        """Force a run's status (and conclusion, which implies `completed`) now; its script and any pending cancel
        are dropped, and it shows in lists at once."""
        status = status or ("completed" if conclusion else None)
        if status not in STATUSES or (conclusion is not None and conclusion not in CONCLUSIONS):
            raise ValueError(f"bad run state: status={status!r} conclusion={conclusion!r}")
        if (status == "completed") != (conclusion is not None):
            raise ValueError("a run has a conclusion exactly when it is completed")
        with self.lock:
            run = self.runs[run_id]
            for table in (self._progress, self._cancels, self._hidden):
                table.pop(run_id, None)
            self._set(run, status, conclusion)
        self._fire()

    def dispatch_by_hand(self, repo: str, workflow_id: int, ref: str, inputs: Mapping[str, Any] | None = None,
                         actor: str = "someone") -> int:  # fmt: skip
        """A run started by `actor` (the UI, or their own token), not over HTTP and not in `dispatches`; takes the next
        script like any run; its id. What GitHub would refuse raises ValueError with GitHub's body."""
        with self.lock:
            record, wf = self._repo(repo), self._workflows[workflow_id]
            if wf["repo"] != record["full_name"].lower():
                raise KeyError(f"workflow {workflow_id} is not in {repo}")
            try:
                head = self._checked(record, wf, ref, dict(inputs or {}))
            except Http as http:
                raise ValueError(http.reply.body.decode()) from None
            return int(self._new_run(record, wf, head, actor)["id"])

    def _checked(self, repo: dict[str, Any], wf: dict[str, Any], ref: str, inputs: dict[str, Any]) -> str:
        """The branch or tag a dispatch runs on, or GitHub's 422: ref, then trigger (on that ref), then inputs."""
        docs = ROUTE_DOCS["dispatch"]
        name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        on_branch = not ref.startswith("refs/tags/") and name in repo["branches"]
        if not on_branch and (ref.startswith("refs/heads/") or name not in repo["tags"]):
            raise error(422, f"No ref found for: {ref}", docs)
        if not wf["dispatchable"] or (on_branch and name not in wf["branches"]):
            raise error(422, "Workflow does not have 'workflow_dispatch' trigger", docs)
        if unexpected := [k for k in inputs if k not in wf["inputs"]]:
            raise error(422, f"Unexpected inputs provided: {json.dumps(unexpected)}", docs)
        return name

    def _dispatch(self, repo: dict[str, Any], wf: dict[str, Any], body: bytes, api: str) -> Reply:
        if self._refuses_run_details and b"return_run_details" in body:
            raise error(422, '"return_run_details" is not a permitted key.', ROUTE_DOCS["dispatch"])
        ref, inputs, details = dispatch_body(body, ROUTE_DOCS["dispatch"])
        run = self._new_run(repo, wf, self._checked(repo, wf, ref, inputs), self.login)
        self.dispatches.append(Dispatch(repo["full_name"], wf["id"], ref, inputs, run["id"]))
        if details and not self._old_enterprise:
            run_url = f"{api}/repos/{repo['full_name']}/actions/runs/{run['id']}"
            return json_reply(200, {"workflow_run_id": run["id"], "run_url": run_url, "html_url": run["html_url"]})
        return Reply(204)

    def _new_run(self, repo: dict[str, Any], wf: dict[str, Any], head: str, login: str) -> dict[str, Any]:
        rid, self._next_run = self._next_run, self._next_run + 7  # ids are global on GitHub: gaps between ours
        wf["number"] += 1
        now, sha = stamp(self.clock()), hashlib.sha1(f"{repo['full_name']}@{head}".encode()).hexdigest()
        uid = self._users.setdefault(login, max(self._users.values()) + 1)
        actor = {"login": login, "id": uid, "node_id": f"U_kgDO{uid:08X}", "type": "User", "site_admin": False,
                 "html_url": f"https://github.com/{login}"}  # fmt: skip
        shown = {k: repo[k] for k in ("id", "node_id", "name", "full_name", "private", "owner", "html_url")}
        run = {
            "id": rid, "name": wf["name"], "node_id": f"WFR_kwLO{rid:012X}", "head_branch": head, "head_sha": sha,
            "path": wf["path"], "display_title": wf["name"], "run_number": wf["number"], "event": "workflow_dispatch",
            "status": "queued", "conclusion": None, "workflow_id": wf["id"], "check_suite_id": rid + 9_000_000_000,
            "html_url": f"https://github.com/{repo['full_name']}/actions/runs/{rid}", "pull_requests": [],
            "created_at": now, "updated_at": now, "actor": actor, "run_attempt": 1, "referenced_workflows": [],
            "run_started_at": now, "triggering_actor": copy.deepcopy(actor), "previous_attempt_url": None,
            "head_commit": {"id": sha, "message": f"Tip of {head}", "timestamp": now},
            "repository": shown, "head_repository": copy.deepcopy(shown),
        }  # fmt: skip
        self.runs[rid] = run
        script = next(iter(self._scripts), self._default)
        if script.count is not None:
            script.count -= 1
            if script.count == 0:
                self._scripts.remove(script)
        self._progress[rid] = Script(script.conclusion, script.polls)
        if self.list_lag > 0:
            self._hidden[rid] = self.list_lag
        return run

    def _list_runs(self, repo: dict[str, Any], wf: dict[str, Any] | None, params: list[tuple[str, str]],
                   link_base: str, api: str) -> Reply:  # fmt: skip
        query = {k: v for k, v in params if v}
        items = [r for r in self.runs.values() if r["repository"]["id"] == repo["id"] and r["id"] not in self._hidden
                 and (wf is None or r["workflow_id"] == wf["id"])]  # fmt: skip
        for key, fields in [("event", ("event",)), ("branch", ("head_branch",)), ("actor", ("actor",)),
                            ("status", ("status", "conclusion"))]:  # fmt: skip
            if key in query:
                items = [r for r in items if query[key] in [r[f]["login"] if f == "actor" else r[f] for f in fields]]
        if "created" in query:
            wanted = created_filter(query["created"])
            items = [r for r in items if wanted(parse_stamp(r["created_at"]))]
        items.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
        self._hidden = {k: left - 1 for k, left in self._hidden.items() if left > 1}
        chunk, headers = page(items, params, link_base)
        return json_reply(200, {"total_count": len(items), "workflow_runs": [self._run_view(r, api) for r in chunk]},
                          headers)  # fmt: skip

    def _cancel(self, run: dict[str, Any]) -> Reply:
        """A cancel is a request: 202 now, `completed`/`cancelled` after `cancel_delay` further GETs of the run."""
        if run["status"] == "completed":
            raise error(409, "Cannot cancel a workflow run that is completed.", ROUTE_DOCS["cancel"])
        self._progress.pop(run["id"], None)
        self._cancels.setdefault(run["id"], self.cancel_delay)
        return json_reply(202, {})

    def _advance(self, run: dict[str, Any]) -> None:
        """A GET of the run: a pending cancel counts down, else the script moves on."""
        rid = run["id"]
        if run["status"] == "completed":
            return
        if rid in self._cancels:
            if self._cancels[rid] <= 0:
                self._set(run, "completed", "cancelled")
            else:
                self._cancels[rid] -= 1
        elif (script := self._progress.get(rid)) is not None:
            script.seen += 1
            if script.seen > script.polls:
                self._set(run, "completed", script.conclusion)
            else:
                self._set(run, "queued" if script.seen == 1 else "in_progress")

    def _set(self, run: dict[str, Any], status: str, conclusion: str | None = None) -> None:
        if (status, conclusion) != (run["status"], run["conclusion"]):
            run["updated_at"] = stamp(self.clock())
        run["status"], run["conclusion"] = status, conclusion
        if status == "completed":
            self._progress.pop(run["id"], None)
            self._cancels.pop(run["id"], None)
            if run["id"] not in self._announced:
                self._announced.add(run["id"])
                self._due.setdefault(threading.get_ident(), []).append(copy.deepcopy(run))

    def _fire(self) -> None:
        with self.lock:
            due, callbacks = self._due.pop(threading.get_ident(), []), list(self._callbacks)
        for run in due:
            for callback in callbacks:
                try:
                    callback(copy.deepcopy(run))
                except Exception as exc:  # the answer still goes out; the test looks here
                    with self.lock:
                        self.callback_errors.append(exc)

    def _run_view(self, run: dict[str, Any], api: str) -> dict[str, Any]:
        view, repo_api = copy.deepcopy(run), f"{api}/repos/{run['repository']['full_name']}"
        url = f"{repo_api}/actions/runs/{run['id']}"
        view |= {f"{k}_url": f"{url}/{k}" for k in ("jobs", "logs", "artifacts", "cancel", "rerun")}
        view |= {"url": url, "check_suite_url": f"{repo_api}/check-suites/{run['check_suite_id']}",
                 "workflow_url": f"{repo_api}/actions/workflows/{run['workflow_id']}"}  # fmt: skip
        for key in ("repository", "head_repository"):
            view[key]["url"] = repo_api
        return view

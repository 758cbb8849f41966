"""A stateful fake of the AWX 24.x REST API (v2), in-process on 127.0.0.1, over real HTTP.

Faithful to /work/shared/reference/protocols.md §2 (where they disagree, this file is wrong):
* §2.1: `Bearer <token>` or Basic for `users`, else 401 + `WWW-Authenticate: Bearer realm=api authorization_url=
  /api/o/authorize/` + the DRF detail with AWX's login suffix; 401 before 405 before filter errors;
  `X-API-Product-Version` on authenticated answers only. A `/api/...` path without `/` → 301 (query kept) before
  auth, so `requests` turns a POST to `.../launch` into a GET of the launch info. Lists: count/next/previous/results,
  page_size 25 (max 200; bad or 0 → 25), `page` (`last`; out of range → 404 "Invalid page."), `next`/`previous`
  RELATIVE, as DRF's replace_query_param makes them (sorted query, `page` replaced, `page=1` kept);
  `count_disabled`; exact, `__iexact/contains/icontains/startswith/gt/gte/lt/lte/in/isnull`, `not__`, `order_by`.
* §2.2 template fields, names unique only per organization; §2.3 launch info; §2.4 launch: extra_vars an object or a
  JSON/YAML string (unparsable → 400 field error), un-prompted variables and fields → still 201, reported in
  `ignored_fields` and not applied (variables equal to the saved value pruned first), 201 + absolute `Location` +
  `{"job", "ignored_fields", <job>}` with status `pending`.
* §2.5: `failed` ⇔ failed/error/canceled, `started` when first running, `finished` + stored `elapsed` (3 dp) when
  terminal, live `elapsed` while running, job `extra_vars` = json.dumps(template vars updated by runtime vars),
  `event_processing_finished` false on the first answer showing a terminal status, true after.
* §2.6: list items omit job_args, job_cwd, job_env, result_traceback, event_processing_finished; filtering on a
  prevent_search field (extra_vars, job_args, job_env, start_args, survey_passwords) → 403.
Assumed: the 301 `Location` is relative (Django CommonMiddleware); unknown routes → 404 "The requested resource could
not be found." before auth; default order by id; body not JSON → 400 "JSON parse error - ..."; the 400 texts for bad
filter values; fault bodies; the `error` explanation; YAML is read as `key: value` lines of YAML 1.1 scalars
(null/bool/int, else string) or JSON, for template vars and for launch-time strings.
Not modelled, answered 400/405 saying so rather than passing silently: `or__`/`chain__`, filters on fields outside
_FIELDS (relation spans too), creating or changing objects, surveys, passwords, named URLs. allow_simultaneous
queueing is not modelled. Jobs move only when their detail is GET (see `script`), never by wall time.
Controls: add_template, script, set_job_status, fail_next, hang_next/wait_hanging/release, clock; recorded: requests,
launches, jobs, count().
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from types import TracebackType
from typing import Any, Literal, NamedTuple
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from tests.support.loopback import LoopbackServer

Kind = Literal["launch", "job", "jobs", "templates", "any"]
_KINDS = ("launch", "job", "jobs", "templates", "any")
TERMINAL = frozenset({"successful", "failed", "error", "canceled"})
STATUSES = ("new", "pending", "waiting", "running", "successful", "failed", "error", "canceled")
VERSION = "24.6.1"
AUTHENTICATE = "Bearer realm=api authorization_url=/api/o/authorize/"
_SUFFIX = " To establish a login session, visit /api/login/."
NOT_PROVIDED = "Authentication credentials were not provided." + _SUFFIX
BAD_PASSWORD = "Invalid username/password." + _SUFFIX
PREVENT_SEARCH = frozenset({"extra_vars", "job_args", "job_env", "start_args", "survey_passwords"})
DEFAULT_VARS = "---\nstack_image: xchem/fragalysis-stack\nstack_image_tag: latest"
_TEXT_LOOKUPS = ("iexact", "contains", "icontains", "startswith")
_LOOKUPS = frozenset({*_TEXT_LOOKUPS, "exact", "gt", "gte", "lt", "lte", "in", "isnull"})
_RESERVED = frozenset({"page", "page_size", "order", "order_by", "count_disabled", "format"})
_PROMPT_FIELDS = ("inventory", "credentials", "scm_branch", "diff_mode", "job_tags", "job_type", "skip_tags", "limit",
                  "verbosity", "execution_environment", "labels", "forks", "job_slice_count", "timeout",
                  "instance_groups")  # fmt: skip
_RENAMED = {"credentials": "credential", "job_tags": "tags"}
_PROMPTS = {f: f"ask_{_RENAMED.get(f, f)}_on_launch" for f in _PROMPT_FIELDS}  # launch field -> its prompt flag
_ASK_FLAGS = ("ask_variables_on_launch", *_PROMPTS.values())
_COPIED = "job_type inventory project playbook scm_branch forks limit verbosity job_tags force_handlers skip_tags"
_COPIED += " start_at_task timeout use_fact_cache organization diff_mode execution_environment allow_simultaneous"
_COPIED += " job_slice_count webhook_service webhook_credential"
_TEMPLATE_DEFAULTS: dict[str, Any] = {
    "description": "", "job_type": "run", "inventory": 1, "project": 6, "playbook": "site-fragalysis-stack.yaml",
    "scm_branch": "", "forks": 0, "limit": "", "verbosity": 0, "job_tags": "", "force_handlers": False, "skip_tags": "",
    "start_at_task": "", "timeout": 0, "use_fact_cache": False, "execution_environment": None, "host_config_key": "",
    **dict.fromkeys(_ASK_FLAGS, False), "survey_enabled": False, "become_enabled": False, "diff_mode": False,
    "allow_simultaneous": False, "custom_virtualenv": None, "job_slice_count": 1, "webhook_service": "",
    "webhook_credential": None, "prevent_instance_group_fallback": False,
}  # fmt: skip
_JOB_DEFAULTS: dict[str, Any] = {
    "canceled_on": None, "job_args": "", "job_cwd": "", "job_env": {}, "job_explanation": "", "execution_node": "",
    "controller_node": "", "result_traceback": "", "event_processing_finished": False, "work_unit_id": None,
    "passwords_needed_to_start": [], "artifacts": {}, "scm_revision": "", "instance_group": None,
    "job_slice_number": 0, "webhook_guid": "", "host_status_counts": None, "custom_virtualenv": None,
    "playbook_counts": {"play_count": 0, "task_count": 0},
}  # fmt: skip
_DETAIL_ONLY = ("host_status_counts", "playbook_counts", "custom_virtualenv")  # JobDetailSerializer extras
_LIST_OMITS = (*_DETAIL_ONLY, "job_args", "job_cwd", "job_env", "result_traceback", "event_processing_finished")
_COMMON = {"id": "int", "inventory": "int", "project": "int", "organization": "int", "created": "dt", "modified": "dt",
           "name": "str", "description": "str", "job_type": "str", "playbook": "str", "status": "str"}  # fmt: skip
_FIELDS: dict[str, dict[str, str]] = {  # filterable and sortable fields and their types
    "Job": _COMMON | dict.fromkeys(["job_template", "unified_job_template"], "int") | {"failed": "bool"}
    | dict.fromkeys(["started", "finished"], "dt") | {"launch_type": "str", "limit": "str", "elapsed": "float"},
    "JobTemplate": _COMMON | dict.fromkeys(["ask_variables_on_launch", "survey_enabled", "allow_simultaneous"], "bool"),
}  # fmt: skip
_ROUTES = [  # (path, kind for faults, route)
    (re.compile(r"^/api/v2/job_templates/$"), "templates", "template_list"),
    (re.compile(r"^/api/v2/job_templates/(\d+)/$"), "templates", "template"),
    (re.compile(r"^/api/v2/job_templates/(\d+)/launch/$"), "launch", "launch"),
    (re.compile(r"^/api/v2/job_templates/(\d+)/jobs/$"), "jobs", "template_jobs"),
    (re.compile(r"^/api/v2/jobs/$"), "jobs", "job_list"),
    (re.compile(r"^/api/v2/jobs/(\d+)/$"), "job", "job"),
    (re.compile(r"^/api/v2/jobs/(\d+)/cancel/$"), "job", "cancel"),
]
_YAML_WORDS = {"": None, "~": None, "null": None} | dict.fromkeys(["yes", "true", "on"], True)
_YAML_WORDS |= dict.fromkeys(["no", "false", "off"], False)  # YAML 1.1, as PyYAML's safe_load reads them
_API_HEADERS = {"X-API-Product-Name": "AWX", "X-API-Node": "awx-fake", "X-API-Time": "0.012s"}


class Recorded(NamedTuple):
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # keys lower-cased
    body: bytes


@dataclass
class _Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Http(Exception):
    """An error answer, raised from deep inside a handler."""

    def __init__(self, status: int, payload: object, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status)
        self.reply = _json(status, payload, headers)


@dataclass
class _Fault:
    kind: str
    count: int
    status: int = 500
    body: Any = None
    after: bool = False  # hangs: process the request first, then withhold the answer


@dataclass
class _Script:
    outcome: str
    polls: int
    count: int | None = None  # None: every later job
    seen: int = 0


def _json(status: int, payload: object, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


def _stamp(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_dt(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_vars(value: object) -> dict[str, Any]:
    """awx parse_yaml_or_json(silent_failure=False): a dict, or a JSON or `key: value` YAML mapping; else ValueError."""
    if isinstance(value, dict):
        return value
    kind = type(value).__name__
    if not isinstance(value, str):
        msg = f"Input type `{kind}` is not a dictionary"
        raise ValueError(f"Cannot parse as JSON (error: {msg}) or YAML (error: {msg}).")
    if value == '""':
        return {}
    try:
        loaded = json.loads(value)
        if not isinstance(loaded, dict):
            raise TypeError(f"Input type `{type(loaded).__name__}` is not a dictionary")
        return loaded
    except (ValueError, TypeError) as json_err:
        result: dict[str, Any] = {}
        for raw in value.splitlines():
            line = raw.split(" #")[0].rstrip()
            if not line.strip() or line.startswith(("#", "---")):
                continue
            key, sep, rest = line.partition(":")
            if not sep or not key or key != key.strip() or (rest and not rest.startswith(" ")):
                yaml_err = f"fake AWX reads only `key: value` lines, not {raw!r}"
                raise ValueError(f"Cannot parse as JSON (error: {json_err}) or YAML (error: {yaml_err}).") from None
            text = rest.strip()
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                result[key] = text[1:-1]
            elif text.lower() in _YAML_WORDS:
                result[key] = _YAML_WORDS[text.lower()]
            else:
                result[key] = int(text) if re.fullmatch(r"[-+]?(0|[1-9][0-9]*)", text) else text
        if not result and value.strip() not in ("", "---", "{}", "null", "~"):
            raise ValueError(f"Cannot parse as JSON (error: {json_err}) or YAML (error: not a mapping).") from None
        return result


class FakeAwx:
    """AWX 24.x `/api/v2/`: job templates, launch, jobs; job progress scripted per job; faults injectable."""

    def __init__(self, *, token: str | None = "awx-test-token", users: dict[str, str] | None = None) -> None:
        self.token = token
        self.users = dict(users or {})
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.requests: list[Recorded] = []
        self.launches: list[tuple[int, dict[str, Any]]] = []  # (template id, extra_vars as received) per created job
        self.templates: dict[int, dict[str, Any]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}  # id -> the job's detail representation (elapsed as stored)
        self.lock = threading.RLock()
        self._orgs = {"Default": 1}
        self._user_ids = {"admin": 1} | {u: i for i, u in enumerate(self.users, start=2) if u != "admin"}
        self._next_template, self._next_job = 7, 4242
        self._scripts: list[_Script] = []
        self._default = _Script("successful", 2)
        self._progress: dict[int, _Script] = {}
        self._shown_terminal: set[int] = set()
        self._faults: list[_Fault] = []
        self._hangs: list[_Fault] = []
        self._cond = threading.Condition()
        self._gate = threading.Event()
        self._hanging = 0
        self._closed = False
        self._http = LoopbackServer(_Handler, owner=self, name="fake-awx")
        self.base = ""

    def start(self) -> FakeAwx:
        self._closed = False
        self.base = self._http.start()
        return self

    def stop(self) -> None:
        self._closed = True  # hangs end with the fake
        self.release()
        self._http.stop()

    def __enter__(self) -> FakeAwx:
        return self.start()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def add_template(
        self,
        name: str,
        *,
        id: int | None = None,
        ask_variables_on_launch: bool = True,
        extra_vars: str = DEFAULT_VARS,
        organization: str = "Default",
        **fields: Any,
    ) -> int:
        """Add a job template (other §2.2 fields via `fields`, e.g. ask_limit_on_launch=True); returns its id."""
        if unknown := set(fields) - set(_TEMPLATE_DEFAULTS):
            raise ValueError(f"unknown job template fields: {sorted(unknown)}")
        with self.lock:
            tid = self._next_template if id is None else id
            if tid in self.templates:
                raise ValueError(f"job template {tid} exists")
            self._next_template = max(self._next_template, tid + 1)
            org = self._orgs.setdefault(organization, len(self._orgs) + 1)
            stamp = _stamp(self.clock())
            self.templates[tid] = {
                "id": tid, "type": "job_template", "url": f"/api/v2/job_templates/{tid}/",
                "related": {k: f"/api/v2/job_templates/{tid}/{k}/" for k in ("launch", "jobs", "schedules", "labels")}
                | {"organization": f"/api/v2/organizations/{org}/"},
                "summary_fields": {"organization": {"id": org, "name": organization, "description": ""}},
                "created": stamp, "modified": stamp, "name": name, **copy.deepcopy(_TEMPLATE_DEFAULTS),
                "extra_vars": extra_vars, "organization": org, "ask_variables_on_launch": ask_variables_on_launch,
                **fields,
            }  # fmt: skip
        return tid

    def script(self, outcome: str = "successful", polls: int = 2, count: int | None = None) -> None:
        """Later jobs stay non-terminal for `polls` GETs of their detail (first `pending`, then `running`), then show
        `outcome`. count=None: every later job (the new default); count=N: the next N jobs, then the default."""
        if outcome not in TERMINAL or polls < 0 or (count is not None and count < 1):
            raise ValueError(f"bad script: outcome={outcome!r} polls={polls} count={count}")
        with self.lock:
            if count is None:
                self._default = _Script(outcome, polls)
            else:
                self._scripts.append(_Script(outcome, polls, count))

    def set_job_status(self, job_id: int, status: str) -> None:
        """Force a status now; the job then stays there (its script is dropped) until set again."""
        if status not in STATUSES:
            raise ValueError(f"not an AWX job status: {status!r}")
        with self.lock:
            self._progress.pop(job_id, None)
            self._set_status(self.jobs[job_id], status)

    def fail_next(self, count: int, status: int = 500, path_kind: Kind = "any", body: Any = None) -> None:
        """Answer the next `count` requests of `path_kind` with `status` (body: Mapping → JSON, str/bytes → as is),
        as a proxy in front of AWX would: after the slash redirect, before auth."""
        if count < 1 or path_kind not in _KINDS:
            raise ValueError(f"bad fault: count={count} path_kind={path_kind!r}")
        with self.lock:
            self._faults.append(_Fault(path_kind, count, status, body))

    def hang_next(self, path_kind: Kind, count: int = 1, *, after_create: bool = False) -> None:
        """Block the next `count` matching requests until release() or stop(). after_create: process the request
        first (a launch creates its job), then withhold the answer; otherwise nothing happens until released."""
        if count < 1 or path_kind not in _KINDS:
            raise ValueError(f"bad hang: count={count} path_kind={path_kind!r}")
        with self.lock:
            self._hangs.append(_Fault(path_kind, count, after=after_create))

    def release(self) -> None:
        """Let every request hanging now answer (late: its client may be gone)."""
        with self._cond:
            self._gate.set()
            self._gate, self._hanging = threading.Event(), 0

    def wait_hanging(self, count: int = 1, timeout: float = 5.0) -> bool:
        """Wait until at least `count` requests are hanging."""
        with self._cond:
            return self._cond.wait_for(lambda: self._hanging >= count, timeout)

    def count(self, method: str | None = None, path_prefix: str | None = None) -> int:
        with self.lock:
            seen = list(self.requests)
        return sum(1 for r in seen if method in (None, r.method) and r.path.startswith(path_prefix or ""))

    def ui_link(self, job_id: int) -> str:
        return f"{self.base}/#/jobs/playbook/{job_id}"

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> _Reply:
        hdrs = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests.append(Recorded(method, target, hdrs, body))
        split = urlsplit(target)
        if not split.path.startswith("/api/"):
            return _Reply(404, b"<h1>Not Found</h1>", {"Content-Type": "text/html; charset=utf-8"})
        if not split.path.endswith("/"):
            location = split.path + "/" + (f"?{split.query}" if split.query else "")
            return _Reply(301, b"", {"Location": location, "Content-Type": "text/html; charset=utf-8"})
        kind, route, ident = "unrouted", "", 0
        for pattern, route_kind, name in _ROUTES:
            if m := pattern.match(split.path):
                kind, route, ident = route_kind, name, int(m[1]) if m.groups() else 0
        hang = self._take(self._hangs, kind)
        if hang is not None and not hang.after:
            self._block()
        reply = self._take_fault(kind)
        if reply is None:
            try:
                if not route:
                    raise _Http(404, {"detail": "The requested resource could not be found."})
                user = self._authenticate(hdrs.get("authorization"))
                try:
                    reply = self._dispatch(method, route, ident, target, user, hdrs, body)
                except _Http as http:
                    reply = http.reply
                reply.headers |= {**_API_HEADERS, "X-API-Product-Version": VERSION}  # authenticated answers only
            except _Http as http:
                reply = http.reply
        if hang is not None and hang.after:
            self._block()
        return reply

    def _dispatch(self, method: str, route: str, ident: int, target: str, user: str, hdrs: dict[str, str],
                  body: bytes) -> _Reply:  # fmt: skip
        if method not in (("GET", "POST") if route in ("launch", "cancel") else ("GET",)):
            raise _Http(405, {"detail": f'Method "{method}" not allowed.'})
        params = parse_qsl(urlsplit(target).query, keep_blank_values=True)
        with self.lock:
            if route == "template_list":
                views = [self._template_view(t) for t in self.templates.values()]
                return self._page(target, self._filter("JobTemplate", views, params), params)
            if route in ("job_list", "template_jobs"):
                if route == "template_jobs":
                    params.append(("job_template", str(self._template(ident)["id"])))
                items = self._filter("Job", list(self.jobs.values()), params)
                return self._page(target, [self._job_view(j, _LIST_OMITS) for j in items], params)
            if route == "cancel":  # UnifiedJobCancel: 202 while it can be canceled, else 405; GET says which
                if ident not in self.jobs:
                    raise _Http(404, {"detail": "Not found."})
                job = self.jobs[ident]
                can_cancel = job["status"] in ("new", "pending", "waiting", "running")
                if method == "GET":
                    return _json(200, {"can_cancel": can_cancel})
                if not can_cancel:
                    raise _Http(405, {"detail": 'Method "POST" not allowed.'})
                self._progress.pop(ident, None)
                self._set_status(job, "canceled")
                return _Reply(202, b"", {})
            if route == "job":
                if ident not in self.jobs:
                    raise _Http(404, {"detail": "Not found."})
                self._advance(ident)
                return _json(200, self._job_view(self.jobs[ident], ()))
            template = self._template(ident)
            if route == "template":
                return _json(200, self._template_view(template))
            return self._launch(template, user, body) if method == "POST" else _json(200, self._launch_info(template))

    def _authenticate(self, header: str | None) -> str:
        scheme, _, credentials = (header or "").strip().partition(" ")
        detail = NOT_PROVIDED
        if scheme.lower() == "bearer" and self.token is not None and credentials.strip() == self.token:
            return "admin"
        if scheme.lower() == "basic":
            try:
                user, sep, password = base64.b64decode(credentials.strip(), validate=True).decode().partition(":")
                if sep and self.users.get(user) == password:
                    return user
                detail = BAD_PASSWORD
            except (binascii.Error, UnicodeDecodeError):
                detail = "Invalid basic header. Credentials not correctly base64 encoded." + _SUFFIX
        raise _Http(401, {"detail": detail}, {"WWW-Authenticate": AUTHENTICATE, **_API_HEADERS})

    def _take(self, queue: list[_Fault], kind: str) -> _Fault | None:
        with self.lock:
            found = next((f for f in queue if f.kind in (kind, "any")), None)
            if found is not None:
                found.count -= 1
                if found.count == 0:
                    queue.remove(found)
            return found

    def _take_fault(self, kind: str) -> _Reply | None:
        fault = self._take(self._faults, kind)
        if fault is None:
            return None
        if isinstance(fault.body, Mapping):
            return _json(fault.status, fault.body)
        body = fault.body if fault.body is not None else f"<h1>Server Error ({fault.status})</h1>"
        return _Reply(fault.status, body.encode() if isinstance(body, str) else body, {"Content-Type": "text/html"})

    def _block(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._hanging += 1
            gate = self._gate
            self._cond.notify_all()
        gate.wait()

    def _template(self, ident: int) -> dict[str, Any]:
        if ident not in self.templates:
            raise _Http(404, {"detail": "Not found."})
        return self.templates[ident]

    def _filter(self, model: str, items: list[dict[str, Any]], params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        fields = _FIELDS[model]
        for key, raw in params:
            if key in _RESERVED:
                continue
            parts = key.removeprefix("not__").split("__")
            if parts[0] in PREVENT_SEARCH:
                raise _Http(403, {"detail": f"Filtering on {parts[0]} is not allowed."})
            lookup = parts.pop() if len(parts) > 1 and parts[-1] in _LOOKUPS else "exact"
            name = "__".join(parts)
            if name not in fields or key.startswith(("or__", "chain__")):
                raise _Http(400, {"detail": f"fake AWX does not model the filter {key!r} on {model}"})
            kind = "bool" if lookup == "isnull" else fields[name]
            if lookup == "in":
                arg: Any = [_convert(name, kind, v) for v in raw.split(",")]
            else:
                arg = raw if lookup in _TEXT_LOOKUPS else _convert(name, kind, raw)
            negate = key.startswith("not__")
            items = [i for i in items if _match(_stored(i[name], fields[name]), lookup, arg) != negate]
        order = [v for k, v in params if k in ("order", "order_by")]
        for key in reversed([*(order[-1].split(",") if order else []), "id"]):
            name = key.removeprefix("-")
            if name not in fields:
                raise _Http(400, {"detail": f"fake AWX does not model ordering by {name!r} on {model}"})
            items.sort(key=_sort_key(name), reverse=key[0] == "-")  # NULLs last ascending, first descending: PostgreSQL
        return items

    def _page(self, target: str, results: list[dict[str, Any]], params: list[tuple[str, str]]) -> _Reply:
        query = dict(params)
        if "count_disabled" in query:
            return _json(200, {"results": results})
        size = min(_positive(query.get("page_size")) or 25, 200)
        pages = max(1, -(-len(results) // size))
        page = pages if query.get("page") == "last" else _positive(query.get("page", "1"))
        if page is None or page > pages:
            raise _Http(404, {"detail": "Invalid page."})
        return _json(200, {
            "count": len(results),
            "next": _replace_page(target, page + 1) if page < pages else None,
            "previous": _replace_page(target, page - 1) if page > 1 else None,
            "results": results[(page - 1) * size : page * size],
        })  # fmt: skip

    def _template_view(self, template: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(template)
        jobs = [j for j in self.jobs.values() if j["job_template"] == template["id"]]
        done = [j for j in jobs if j["finished"] is not None]
        last = max(done, key=lambda j: (j["finished"], j["id"])) if done else None
        view["status"] = max(jobs, key=lambda j: j["id"])["status"] if jobs else "never updated"
        view.update(last_job_run=last and last["finished"], last_job_failed=bool(last and last["failed"]))
        view["next_job_run"] = None
        return view

    def _launch_info(self, template: dict[str, Any]) -> dict[str, Any]:
        flags = {flag: template[flag] for flag in _ASK_FLAGS}
        defaults = {f: template[f] for f in _PROMPT_FIELDS if f in template} | {
            "extra_vars": template["extra_vars"], "inventory": {"name": "Demo Inventory", "id": template["inventory"]},
            "credentials": [], "labels": [], "instance_groups": [], "execution_environment": {},
        }  # fmt: skip
        return {
            "can_start_without_user_input": not any(flags.values()), "passwords_needed_to_start": [], **flags,
            "survey_enabled": template["survey_enabled"], "variables_needed_to_start": [],
            "credential_needed_to_start": False, "inventory_needed_to_start": template["inventory"] is None,
            "job_template_data": {k: template[k] for k in ("name", "id", "description")}, "defaults": defaults,
        }  # fmt: skip

    def _launch(self, template: dict[str, Any], user: str, body: bytes) -> _Reply:
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise _Http(400, {"detail": f"JSON parse error - {exc}"}) from None
        if not isinstance(data, dict):
            raise _Http(400, {"__all__": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]})
        try:
            received = parse_vars(data.get("extra_vars", {}))
        except ValueError as exc:
            raise _Http(400, {"extra_vars": [str(exc)]}) from None
        try:
            saved = parse_vars(template["extra_vars"] or "{}")
        except ValueError:
            saved = {}
        ignored: dict[str, Any] = {}
        accepted = received
        if not template["ask_variables_on_launch"]:  # un-prompted: dropped; those equal to the saved value unreported
            accepted = {}
            if rejected := {k: v for k, v in received.items() if k not in saved or saved[k] != v}:
                ignored["extra_vars"] = rejected
        prompts = {f: data[f] for f in _PROMPT_FIELDS if f in data}
        ignored |= {f: v for f, v in prompts.items() if not template[_PROMPTS[f]]}
        job_id, self._next_job = self._next_job, self._next_job + 1
        stamp, uid = _stamp(self.clock()), self._user_ids.get(user, 1)
        job: dict[str, Any] = {
            "id": job_id, "type": "job", "url": f"/api/v2/jobs/{job_id}/",
            "related": {k: f"/api/v2/jobs/{job_id}/{k}/" for k in ("stdout", "job_events", "cancel", "relaunch")}
            | {"job_template": template["url"], "unified_job_template": template["url"]},
            "summary_fields": {"organization": template["summary_fields"]["organization"],
                               "job_template": {k: template[k] for k in ("id", "name", "description")}},
            "created": stamp, "modified": stamp, "name": template["name"], "description": template["description"],
            **{k: copy.deepcopy(template[k]) for k in _COPIED.split()}, "unified_job_template": template["id"],
            "launch_type": "manual", "status": "pending", "failed": False, "started": None, "finished": None,
            "elapsed": 0.0, "extra_vars": json.dumps({**saved, **accepted}), "job_template": template["id"],
            "launched_by": {"id": uid, "name": user, "type": "user", "url": f"/api/v2/users/{uid}/"},
            **copy.deepcopy(_JOB_DEFAULTS),
        }  # fmt: skip
        job |= {f: v for f, v in prompts.items() if f not in ignored and f in job}
        self.jobs[job_id] = job
        self.launches.append((template["id"], received))
        script = next(iter(self._scripts), self._default)
        if script.count is not None:
            script.count -= 1
            if script.count == 0:
                self._scripts.remove(script)
        self._progress[job_id] = _Script(script.outcome, script.polls)
        answer = {"job": job_id, "ignored_fields": ignored, **self._job_view(job, _DETAIL_ONLY)}
        return _json(201, answer, {"Location": f"{self.base}{job['url']}"})

    def _advance(self, job_id: int) -> None:
        job, script = self.jobs[job_id], self._progress.get(job_id)
        if script is not None and job["status"] not in TERMINAL:
            script.seen += 1
            waiting = "pending" if script.seen == 1 else "running"
            self._set_status(job, script.outcome if script.seen > script.polls else waiting)
        if job["status"] in TERMINAL:
            job["event_processing_finished"] = job_id in self._shown_terminal
            self._shown_terminal.add(job_id)

    def _set_status(self, job: dict[str, Any], status: str) -> None:
        now = self.clock()
        stamp = _stamp(now)
        if status != job["status"]:
            job["modified"] = stamp
        job["status"], job["failed"] = status, status in ("failed", "error", "canceled")
        if status == "running" or (status in ("successful", "failed") and job["started"] is None):
            job["started"] = job["started"] or stamp  # a job that failed or succeeded did run
        if status not in TERMINAL:
            job.update(finished=None, elapsed=0.0, event_processing_finished=False)
            self._shown_terminal.discard(job["id"])
            return
        job["finished"] = stamp
        job["elapsed"] = round((now - _parse_dt(job["started"])).total_seconds(), 3) if job["started"] else 0.0
        if status == "canceled":
            job["canceled_on"] = stamp
        if status == "error" and not job["job_explanation"]:
            job["job_explanation"] = (
                'Previous Task Failed: {"job_type": "project_update", "job_name": "fragalysis-stack-kubernetes", '
                f'"job_id": "{job["id"] - 1}"}}'
            )

    def _job_view(self, job: dict[str, Any], omit: tuple[str, ...]) -> dict[str, Any]:
        view = {k: copy.deepcopy(v) for k, v in job.items() if k not in omit}
        if job["status"] == "running" and job["started"]:
            view["elapsed"] = round((self.clock() - _parse_dt(job["started"])).total_seconds(), 3)
        return view


def _positive(raw: str | None) -> int | None:
    """DRF's _positive_int(strict=True): a positive int, else None."""
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        return None
    return value if value > 0 else None


def _replace_page(target: str, page: int) -> str:
    split = urlsplit(target)
    query = parse_qs(split.query, keep_blank_values=True) | {"page": [str(page)]}
    return urlunsplit(("", "", split.path, urlencode(sorted(query.items()), doseq=True), ""))


def _stored(value: Any, kind: str) -> Any:
    return _parse_dt(value) if kind == "dt" and value is not None else value


def _bool(raw: str) -> bool:
    if raw.lower() not in ("true", "1", "yes", "false", "0", "no"):
        raise ValueError(raw)
    return raw.lower() in ("true", "1", "yes")


_CONVERTERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "dt": _parse_dt, "bool": _bool, "str": str}
_BAD_VALUE = {  # Django's messages; a ValidationError's list comes JSON-encoded inside the ParseError detail
    "int": "Field '{name}' expected a number but got '{raw}'.",
    "float": "Field '{name}' expected a number but got '{raw}'.",
    "dt": '["“{raw}” value has an invalid format. It must be in YYYY-MM-DD HH:MM[:ss[.uuuuuu]][TZ] format."]',
    "bool": '["“{raw}” value must be either True or False."]',
}


def _convert(name: str, kind: str, raw: str) -> Any:
    """A query-string value as Django's field.to_python makes it; a bad one is a 400 ParseError."""
    try:
        return _CONVERTERS[kind](raw)
    except ValueError:
        raise _Http(400, {"detail": _BAD_VALUE[kind].format(name=name, raw=raw)}) from None


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda item: (item[name] is None, 0 if item[name] is None else item[name])


def _match(value: Any, lookup: str, arg: Any) -> bool:
    if lookup == "isnull":
        return (value is None) is arg
    if value is None:
        return False
    if lookup in _TEXT_LOOKUPS:
        text, needle = (str(value), arg) if lookup == "contains" else (str(value).lower(), arg.lower())
        return bool({"iexact": text == needle, "startswith": text.startswith(needle)}.get(lookup, needle in text))
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "exact": lambda a, b: a == b, "in": lambda a, b: a in b, "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b,
    }  # fmt: skip
    return bool(ops[lookup](value, arg))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall per request

    def do_GET(self) -> None:
        awx: FakeAwx = self.server.owner  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = awx.handle(self.command, self.path, dict(self.headers.items()), body)
        try:
            self.send_response(reply.status)
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # a hung answer whose client is gone
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

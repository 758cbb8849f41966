"""A stateful fake of the AWX 24.x REST API (v2), in-process on 127.0.0.1, over real HTTP.

Faithful to AWX 24.6.1 as its source shows (github.com/ansible/awx; where they disagree, this file is wrong):
* Auth: `Bearer <token>` or Basic for `users`, else 401 + `WWW-Authenticate: Bearer realm=api authorization_url=
  /api/o/authorize/` + the DRF detail with AWX's login suffix; 401 before 405 before filter errors;
  `X-API-Product-Version` on authenticated answers only. A `/api/...` path without `/` → 301 (query kept) before
  auth, so `requests` turns a POST to `.../launch` into a GET of the launch info. Lists: count/next/previous/results,
  page_size 25 (max 200; bad or 0 → 25), `page` (`last`; out of range → 404 "Invalid page."), `next`/`previous`
  RELATIVE, as DRF's replace_query_param makes them (sorted query, `page` replaced, `page=1` kept);
  `count_disabled`; exact, `__iexact/contains/icontains/startswith/gt/gte/lt/lte/in/isnull`, `not__`, `order_by`;
  filters go by model fields (so `cancel_flag` filters although no serializer shows it).
* Template fields, names unique only per organization; the launch info; the launch: extra_vars an object or a
  JSON/YAML string (unparsable → 400 field error), un-prompted variables and fields → still 201, reported in
  `ignored_fields` and not applied (values equal to the saved ones pruned first: jobs.py
  JobTemplate._accept_or_ignore_job_kwargs), 201 + absolute `Location` + `{"job", "ignored_fields", <job>}`, `pending`.
* Jobs: `failed` ⇔ failed/error/canceled, `started` when first running, `finished` + stored `elapsed` (3 dp) when
  terminal, live `elapsed` while running, job `extra_vars` = json.dumps(template vars updated by runtime vars),
  `event_processing_finished` false on the first answer showing a terminal status, true after.
* Job lists: items omit job_args, job_cwd, job_env, result_traceback, event_processing_finished; filtering on a
  prevent_search field (Job/WorkflowJob: extra_vars, job_args, job_env, survey_passwords) → 403 "Filtering on <f> is
  not allowed.", on start_args (UnifiedJob.PASSWORD_FIELDS) → 403 "Filtering on password fields is not allowed."
  (django-ansible-base rest_filters/utils.py get_fields_from_path).
* Checked in awx (devel e21dd0a, = 24.6.1+145): cancel (generics.py GenericCancelView.post: 202 with no body
  when `can_cancel`, i.e. status in CAN_CANCEL new/pending/waiting/running (constants.py, unified_jobs.py
  UnifiedJob.can_cancel), else http_method_not_allowed → 405; GET → `{"can_cancel": bool}` (JobCancelSerializer,
  WorkflowJobCancelSerializer)). UnifiedJob.cancel sets the model field `cancel_flag` (no serializer shows it; kept
  in the record, hidden) and UnifiedJob.save sets `canceled_on` at once. A job not yet dispatched (new/pending: no
  celery_task_id, which TaskManager.start_task gives a job with `waiting`, a workflow job with `running`) is made
  `canceled` in the request itself; a dispatched one only when its own run (tasks/jobs.py) or the workflow manager
  (task_manager.py spawn_workflow_graph_jobs; WorkflowJob.cancel_dispatcher_process → True) acts: here after
  `cancel_delay` further GETs of its detail (0: at once, as when the dispatcher does not answer). A 500 from AWX
  (awx/main/views.py handle_500 via handler500 in awx/urls.py; ATOMIC_REQUESTS in settings/defaults.py) is JSON
  `{"detail": "A server error has occurred."}` without X-API headers and created nothing; 502/503/504 come from the
  nginx in front (its own HTML page, ngx_http_special_response.c), and AWX behind may still commit the launch.
  Workflow job templates, workflow jobs and sliced job templates: see tests/fakes/awx_workflows.py.
Assumed: the 301 `Location` is relative (Django CommonMiddleware); unknown routes → 404 "The requested resource could
not be found." before auth; default order by id; body not JSON → 400 "JSON parse error - ..."; the 400 texts for bad
filter values; the nginx page is a current nginx's with server_tokens off (ingress-nginx's default); the `error`
explanation; YAML is read as `key: value` lines of YAML 1.1 scalars (null/bool/int, else string) or JSON, for
template vars and for launch-time strings; a template's `status` is that of its newest job (slices and sliced
workflow jobs included), `last_job_*` of its latest finished one.
Not modelled, answered 400/405 saying so rather than passing silently: `or__`/`chain__`, filters on fields outside
awx_base.FIELDS (relation spans, `type` too), creating or changing objects, surveys, passwords, named URLs. Not
modelled at all: allow_simultaneous queueing, DRF's `Allow` header, user_capabilities, recent_jobs, validation of
prompted ids and types, a 500 in the middle of a cancel (GenericCancelView is non-atomic: it would keep cancel_flag).
Jobs move only when their detail is GET (see `script`), never by wall time.
Controls: add_template, add_workflow_template, script, set_job_status, cancel_delay, inventory_hosts, launch_by_hand,
fail_next, gateway_error_next, broken_body_next, repeat_next_link, corrupt, hang_next/wait_hanging/release, clock;
path kinds for faults (Kind): launch, templates, jobs (/jobs/, /job_templates/<id>/jobs/), job (/jobs/<id>/ and its
cancel/), cancel (/jobs/<id>/cancel/ only), workflow_launch, workflow_templates (list and detail), workflow_jobs
(/workflow_jobs/, /workflow_job_templates/<id>/workflow_jobs/), workflow_job (/workflow_jobs/<id>/ and its cancel/),
workflow_cancel (its cancel/ only), any. Recorded: requests, launches (job template launches over HTTP, not
launch_by_hand), workflow_launches (likewise), templates, workflow_templates, jobs, workflow_jobs, count().
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.awx_base import (
    API_HEADERS,
    AUTHENTICATE,
    BAD_BASIC,
    BAD_PASSWORD,
    CAN_CANCEL,
    DISPATCHED,
    KINDS,
    NOT_PROVIDED,
    PREVENT_SEARCH,
    ROUTES,
    SERVER_ERROR,
    STATUSES,
    TERMINAL,
    VERSION,
    Fault,
    Handler,
    Http,
    Kind,
    Recorded,
    Reply,
    Script,
    filter_items,
    json_reply,
    nginx_page,
    page,
    parse_dt,
    parse_vars,
    request_data,
    saved_vars,
    stamp,
)
from tests.fakes.awx_workflows import WorkflowsMixin
from tests.support.loopback import LoopbackServer

__all__ = ["AUTHENTICATE", "BAD_PASSWORD", "NOT_PROVIDED", "PREVENT_SEARCH", "STATUSES", "TERMINAL", "FakeAwx",
           "Kind", "Recorded", "parse_vars"]  # fmt: skip

DEFAULT_VARS = "---\nstack_image: xchem/fragalysis-stack\nstack_image_tag: latest"
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
    "playbook_counts": {"play_count": 0, "task_count": 0}, "cancel_flag": False,
}  # fmt: skip
HIDDEN = ("cancel_flag",)  # model fields no serializer shows
_DETAIL_ONLY = ("host_status_counts", "playbook_counts", "custom_virtualenv")  # JobDetailSerializer extras
_LIST_OMITS = (*_DETAIL_ONLY, "job_args", "job_cwd", "job_env", "result_traceback", "event_processing_finished")
_POSTABLE = ("launch", "cancel", "workflow_launch", "workflow_cancel")


class FakeAwx(WorkflowsMixin):
    """AWX 24.x `/api/v2/`: job and workflow job templates, launch, jobs, workflow jobs, cancel; job progress scripted
    per job; faults injectable."""

    def __init__(self, *, token: str | None = "awx-test-token", users: dict[str, str] | None = None) -> None:
        self.token = token
        self.users = dict(users or {})
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)
        self.cancel_delay: int | None = 1  # GETs of a dispatched job's detail before a cancel shows; None: never
        self.inventory_hosts: int | None = None  # hosts of every inventory, bounding slices; None: enough
        self.requests: list[Recorded] = []
        self.launches: list[tuple[int, dict[str, Any]]] = []  # (template id, extra_vars as received) per HTTP launch
        self.workflow_launches: list[tuple[int, dict[str, Any]]] = []  # likewise for workflow job templates
        self.templates: dict[int, dict[str, Any]] = {}
        self.workflow_templates: dict[int, dict[str, Any]] = {}
        self.jobs: dict[int, dict[str, Any]] = {}  # id -> the job's detail representation (elapsed as stored)
        self.workflow_jobs: dict[int, dict[str, Any]] = {}  # likewise; ids shared with jobs (UnifiedJob)
        self.lock = threading.RLock()
        self._orgs = {"Default": 1}
        self._user_ids = {"admin": 1} | {u: i for i, u in enumerate(self.users, start=2) if u != "admin"}
        self._next_template, self._next_job = 7, 4242
        self._scripts: list[Script] = []
        self._default = Script("successful", 2)
        self._progress: dict[int, Script] = {}
        self._cancels: dict[int, int | None] = {}  # dispatched jobs with a cancel request -> GETs left (None: never)
        self._shown_terminal: set[int] = set()
        self._overlays: dict[int, dict[str, Any]] = {}  # corrupt()
        self._slice_parent: dict[int, int] = {}
        self._slice_plans: dict[int, tuple[int, str, dict[str, Any], dict[str, Any], int]] = {}
        self._slices: dict[int, list[int]] = {}
        self._faults: list[Fault] = []
        self._gateways: list[Fault] = []
        self._broken: list[Fault] = []
        self._repeat: set[str] = set()
        self._deferred: list[tuple[int, Callable[[], object]]] = []  # (request number it runs after, the work)
        self._hangs: list[Fault] = []
        self._cond = threading.Condition()
        self._gate = threading.Event()
        self._hanging = 0
        self._closed = False
        self._http = LoopbackServer(Handler, owner=self, name="fake-awx")
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
        """Add a job template (other template fields via `fields`, e.g. ask_limit_on_launch=True, job_slice_count=3);
        returns its id. Ids are shared with workflow job templates (UnifiedJobTemplate)."""
        if unknown := set(fields) - set(_TEMPLATE_DEFAULTS):
            raise ValueError(f"unknown job template fields: {sorted(unknown)}")
        with self.lock:
            tid, org = self._new_template_id(id), self._org(organization)
            now = stamp(self.clock())
            self.templates[tid] = {
                "id": tid, "type": "job_template", "url": f"/api/v2/job_templates/{tid}/",
                "related": {k: f"/api/v2/job_templates/{tid}/{k}/" for k in ("launch", "jobs", "schedules", "labels")}
                | {"organization": f"/api/v2/organizations/{org}/"},
                "summary_fields": {"organization": {"id": org, "name": organization, "description": ""}},
                "created": now, "modified": now, "name": name, **copy.deepcopy(_TEMPLATE_DEFAULTS),
                "extra_vars": extra_vars, "organization": org, "ask_variables_on_launch": ask_variables_on_launch,
                **fields,
            }  # fmt: skip
        return tid

    def script(self, outcome: str = "successful", polls: int = 2, count: int | None = None) -> None:
        """Later jobs and workflow jobs stay non-terminal for `polls` GETs of their detail (first `pending`, then
        `running`), then show `outcome`. count=None: every later one (the new default); count=N: the next N, then the
        default. Slice jobs take no script: they follow their workflow job."""
        if outcome not in TERMINAL or polls < 0 or (count is not None and count < 1):
            raise ValueError(f"bad script: outcome={outcome!r} polls={polls} count={count}")
        with self.lock:
            if count is None:
                self._default = Script(outcome, polls)
            else:
                self._scripts.append(Script(outcome, polls, count))

    def set_job_status(self, job_id: int, status: str) -> None:
        """Force a status on a job or workflow job now; it then stays there (its script and any pending cancel are
        dropped) until set again."""
        if status not in STATUSES:
            raise ValueError(f"not an AWX job status: {status!r}")
        with self.lock:
            record = self._unified(job_id)
            self._progress.pop(job_id, None)
            self._cancels.pop(job_id, None)
            self._set_status(record, status)

    def launch_by_hand(
        self, template_id: int, extra_vars: dict[str, Any], *, user: str = "operator", workflow: bool = False
    ) -> int:
        """A launch by `user` (in the UI or with their own token), not over this fake's HTTP and not in `launches`:
        the job (a workflow job if `workflow` or the template is sliced) has launched_by/created_by that user,
        launch_type manual, takes the next script like any launch; returns its id. A workflow job template that
        would refuse the variables (400 over HTTP) raises ValueError."""
        with self.lock:
            self._user_ids.setdefault(user, max(self._user_ids.values()) + 1)
            try:
                if workflow:
                    record = self._workflow_launch_record(
                        self._workflow_template(template_id), user, {"extra_vars": extra_vars}
                    )[0]
                else:
                    record = self._launch_record(self._template(template_id), user, {"extra_vars": extra_vars})[0]
            except Http as http:
                raise ValueError(http.reply.body.decode()) from None
            return int(record["id"])

    def fail_next(self, count: int, status: int = 500, path_kind: Kind = "any", body: Any = None) -> None:
        """Answer the next `count` requests of `path_kind` with `status`, after the slash redirect, before auth; nothing
        is processed (AWX rolled back, or nothing reached it). body: Mapping → JSON, str/bytes → as is (text/html);
        None → AWX's JSON for 500 (handle_500), nginx's page for 502/503/504, else a plain HTML page."""
        if count < 1 or path_kind not in KINDS:
            raise ValueError(f"bad fault: count={count} path_kind={path_kind!r}")
        with self.lock:
            self._faults.append(Fault(path_kind, count, status, body))

    def gateway_error_next(
        self, status: int = 504, *, creates: bool = True, after_requests: int = 0, path_kind: Kind = "launch"
    ) -> None:
        """Answer the next request of `path_kind` with `status` and nginx's page, as the gateway does when AWX is slow.
        creates: AWX still processes the request (a launch creates its job), at once when after_requests == 0, else
        right after the `after_requests`-th later request (any path) has been answered, on the clock of that moment;
        those requests do not see it. creates=False: nothing reached AWX."""
        if path_kind not in KINDS or after_requests < 0:
            raise ValueError(f"bad gateway error: path_kind={path_kind!r} after_requests={after_requests}")
        with self.lock:
            self._gateways.append(Fault(path_kind, 1, status, creates=creates, after_requests=after_requests))

    def broken_body_next(self, path_kind: Kind, count: int = 1, body: bytes = b'{"id": ') -> None:
        """The next `count` requests of `path_kind` are processed as usual (a launch creates its job, a job detail GET
        moves the job on), but answered 200 with `body` as application/json."""
        if count < 1 or path_kind not in KINDS:
            raise ValueError(f"bad broken body: count={count} path_kind={path_kind!r}")
        with self.lock:
            self._broken.append(Fault(path_kind, count, 200, body))

    def repeat_next_link(self, path_kind: Kind, on: bool = True) -> None:
        """While on, list answers of `path_kind` carry a `next` link naming the page just answered, forever."""
        if path_kind not in KINDS:
            raise ValueError(f"bad path kind: {path_kind!r}")
        with self.lock:
            (self._repeat.add if on else self._repeat.discard)(path_kind)

    def corrupt(self, kind: str, id: int, **fields: Any) -> None:
        """From now on every answer showing job (kind "job") or workflow job `id` — detail, list item, launch answer —
        has `fields` as given (any JSON-able values, e.g. elapsed=10**330 → a 331-digit JSON number). Filters,
        ordering and progress keep using the stored values."""
        json.dumps(fields)  # JSON-able, or TypeError/ValueError now
        with self.lock:
            store = {"job": self.jobs, "workflow_job": self.workflow_jobs}.get(kind)
            if store is None or id not in store:
                raise KeyError(f"no {kind} {id}")
            self._overlays.setdefault(id, {}).update(copy.deepcopy(fields))

    def hang_next(self, path_kind: Kind, count: int = 1, *, after_create: bool = False) -> None:
        """Block the next `count` matching requests until release() or stop(). after_create: process the request
        first (a launch creates its job), then withhold the answer; otherwise nothing happens until released."""
        if count < 1 or path_kind not in KINDS:
            raise ValueError(f"bad hang: count={count} path_kind={path_kind!r}")
        with self.lock:
            self._hangs.append(Fault(path_kind, count, after=after_create))

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

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Reply:
        hdrs = {k.lower(): v for k, v in headers.items()}
        with self.lock:
            self.requests.append(Recorded(method, target, hdrs, body))
            number = len(self.requests)
        try:
            return self._handle(method, target, hdrs, body, number)
        finally:
            with self.lock:
                due = [work for after, work in self._deferred if after <= number]
                self._deferred = [(after, work) for after, work in self._deferred if after > number]
                for work in due:
                    work()

    def _handle(self, method: str, target: str, hdrs: dict[str, str], body: bytes, number: int) -> Reply:
        split = urlsplit(target)
        if not split.path.startswith("/api/"):
            return Reply(404, b"<h1>Not Found</h1>", {"Content-Type": "text/html; charset=utf-8"})
        if not split.path.endswith("/"):
            location = split.path + "/" + (f"?{split.query}" if split.query else "")
            return Reply(301, b"", {"Location": location, "Content-Type": "text/html; charset=utf-8"})
        kinds: tuple[str, ...] = ("unrouted",)
        route, ident = "", 0
        for pattern, route_kinds, name in ROUTES:
            if m := pattern.match(split.path):
                kinds, route, ident = route_kinds, name, int(m[1]) if m.groups() else 0
        hang = self._take(self._hangs, kinds)
        if hang is not None and not hang.after:
            self._block()

        def awx() -> Reply:  # AWX itself: auth, then the route
            try:
                if not route:
                    raise Http(404, {"detail": "The requested resource could not be found."})
                user = self._authenticate(hdrs.get("authorization"))
                try:
                    reply = self._dispatch(method, route, ident, target, kinds, user, body)
                except Http as http:
                    reply = http.reply
                reply.headers |= {**API_HEADERS, "X-API-Product-Version": VERSION}  # authenticated answers only
                return reply
            except Http as http:
                return http.reply

        reply = self._fault_reply(kinds)
        if reply is None and (gateway := self._take(self._gateways, kinds)) is not None:
            reply = nginx_page(gateway.status)
            if gateway.creates and gateway.after_requests == 0:
                awx()
            elif gateway.creates:
                with self.lock:
                    self._deferred.append((number + gateway.after_requests, awx))
        if reply is None:
            broken = self._take(self._broken, kinds)
            reply = awx()
            if broken is not None:
                data = broken.body if isinstance(broken.body, bytes) else str(broken.body).encode()
                reply = Reply(200, data, {"Content-Type": "application/json", **API_HEADERS,
                                          "X-API-Product-Version": VERSION})  # fmt: skip
        if hang is not None and hang.after:
            self._block()
        return reply

    def _dispatch(self, method: str, route: str, ident: int, target: str, kinds: tuple[str, ...], user: str,
                  body: bytes) -> Reply:  # fmt: skip
        if method not in (("GET", "POST") if route in _POSTABLE else ("GET",)):
            raise Http(405, {"detail": f'Method "{method}" not allowed.'})
        params = parse_qsl(urlsplit(target).query, keep_blank_values=True)
        repeat = bool(self._repeat & {*kinds, "any"})
        with self.lock:
            if route == "template_list":
                views = [self._template_view(t) for t in self.templates.values()]
                return page(target, filter_items("JobTemplate", views, params), params, repeat=repeat)
            if route in ("job_list", "template_jobs"):
                if route == "template_jobs":
                    params.append(("job_template", str(self._template(ident)["id"])))
                items = filter_items("Job", list(self.jobs.values()), params)
                return page(target, [self._job_view(j, _LIST_OMITS) for j in items], params, repeat=repeat)
            if route in ("cancel", "workflow_cancel"):
                record = self._unified(ident, workflow=route == "workflow_cancel", missing=Http(404, _NOT_FOUND))
                return self._cancel(record, method)
            if route == "job":
                job = self._unified(ident, workflow=False, missing=Http(404, _NOT_FOUND))
                self._advance(job)
                return json_reply(200, self._job_view(job, ()))
            if route == "template":
                return json_reply(200, self._template_view(self._template(ident)))
            if route == "launch":
                template = self._template(ident)
                if method == "GET":
                    return json_reply(200, self._launch_info(template))
                return self._launch(template, user, body)
            return self._workflow_dispatch(method, route, ident, target, user, body, params, repeat)

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
                detail = BAD_BASIC
        raise Http(401, {"detail": detail}, {"WWW-Authenticate": AUTHENTICATE, **API_HEADERS})

    def _take(self, queue: list[Fault], kinds: tuple[str, ...]) -> Fault | None:
        with self.lock:
            found = next((f for f in queue if f.kind in (*kinds, "any")), None)
            if found is not None:
                found.count -= 1
                if found.count == 0:
                    queue.remove(found)
            return found

    def _fault_reply(self, kinds: tuple[str, ...]) -> Reply | None:
        fault = self._take(self._faults, kinds)
        if fault is None:
            return None
        if isinstance(fault.body, Mapping):
            return json_reply(fault.status, fault.body)
        if fault.body is None and fault.status == 500:
            return json_reply(500, SERVER_ERROR)
        if fault.body is None and fault.status in (502, 503, 504):
            return nginx_page(fault.status)
        body = fault.body if fault.body is not None else f"<h1>Server Error ({fault.status})</h1>"
        return Reply(fault.status, body.encode() if isinstance(body, str) else body, {"Content-Type": "text/html"})

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
            raise Http(404, _NOT_FOUND)
        return self.templates[ident]

    def _unified(self, ident: int, *, workflow: bool | None = None, missing: Exception | None = None) -> dict[str, Any]:
        """A job (workflow False), a workflow job (True) or either (None) by id; KeyError or `missing` if none."""
        for is_workflow, store in ((False, self.jobs), (True, self.workflow_jobs)):
            if workflow in (None, is_workflow) and ident in store:
                return store[ident]
        raise missing or KeyError(f"no job or workflow job {ident}")

    def _new_template_id(self, wanted: int | None) -> int:
        tid = self._next_template if wanted is None else wanted
        if tid in self.templates or tid in self.workflow_templates:
            raise ValueError(f"template {tid} exists")
        self._next_template = max(self._next_template, tid + 1)
        return tid

    def _org(self, name: str) -> int:
        return self._orgs.setdefault(name, len(self._orgs) + 1)

    def _new_job_id(self) -> int:
        ident, self._next_job = self._next_job, self._next_job + 1
        return ident

    def _user(self, user: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(launched_by, summary_fields.created_by) of a manual launch by `user` (UnifiedJob.launched_by)."""
        uid = self._user_ids.get(user, 1)
        launched_by = {"id": uid, "name": user, "type": "user", "url": f"/api/v2/users/{uid}/"}
        return launched_by, {"id": uid, "username": user, "first_name": "", "last_name": ""}

    def _template_view(self, template: dict[str, Any]) -> dict[str, Any]:
        view = copy.deepcopy(template)
        key = "job_template" if template["type"] == "job_template" else "workflow_job_template"
        stores = (self.jobs, self.workflow_jobs) if key == "job_template" else (self.workflow_jobs,)
        runs = [j for store in stores for j in store.values() if j[key] == template["id"]]
        done = [j for j in runs if j["finished"] is not None]
        last = max(done, key=lambda j: (j["finished"], j["id"])) if done else None
        view["status"] = max(runs, key=lambda j: j["id"])["status"] if runs else "never updated"
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

    def _launch(self, template: dict[str, Any], user: str, body: bytes) -> Reply:
        """views JobTemplateLaunch.post: a Job, or for a sliced template a WorkflowJob answered as `workflow_job`."""
        record, ignored, received = self._launch_record(template, user, request_data(body))
        self.launches.append((template["id"], received))
        if record["type"] == "workflow_job":
            answer = {"workflow_job": record["id"], "ignored_fields": ignored, **self._workflow_job_view(record, ())}
        else:
            answer = {"job": record["id"], "ignored_fields": ignored, **self._job_view(record, _DETAIL_ONLY)}
        return json_reply(201, answer, {"Location": f"{self.base}{record['url']}"})

    def _launch_record(
        self, template: dict[str, Any], user: str, data: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        """JobLaunchSerializer.validate (_exclude_errors=['prompts']) + JobTemplate.create_unified_job + signal_start:
        (the new job or sliced workflow job, ignored_fields, extra_vars as received)."""
        try:
            received = parse_vars(data.get("extra_vars", {}))
        except ValueError as exc:
            raise Http(400, {"extra_vars": [str(exc)]}) from None
        saved = saved_vars(template["extra_vars"])
        ignored: dict[str, Any] = {}
        accepted = received
        if not template["ask_variables_on_launch"]:  # un-prompted: dropped; those equal to the saved value unreported
            accepted = {}
            if rejected := {k: v for k, v in received.items() if k not in saved or saved[k] != v}:
                ignored["extra_vars"] = rejected
        prompts: dict[str, Any] = {}
        for name in _PROMPT_FIELDS:
            new = data.get(name)
            if new is None or new == template.get(name, []):  # not given, or the template's own value: neither
                continue
            if not template[_PROMPTS[name]]:
                ignored[name] = new
            elif name == "job_slice_count" and isinstance(new, int) and new > 1 >= self._slice_count(template, new):
                ignored[name] = new  # "Job inventory does not have enough hosts for slicing", not blocking
            else:
                prompts[name] = new
        slices = self._slice_count(template, prompts.get("job_slice_count"))
        if slices > 1:
            record = self._new_sliced_workflow_job(template, user, accepted, prompts, slices)
        else:
            eager = {"job_slice_count": 1} if template["job_slice_count"] > 1 else {}
            record = self._new_job(template, user, accepted, prompts | eager)
        self._start(record)
        return record, ignored, received

    def _slice_count(self, template: dict[str, Any], prompted: Any) -> int:
        """JobTemplate.get_effective_slice_ct: the (prompted) slice count, at most the inventory's hosts."""
        count = prompted if isinstance(prompted, int) else template["job_slice_count"]
        return count if self.inventory_hosts is None else min(count, self.inventory_hosts)

    def _new_job(
        self, template: dict[str, Any], user: str, variables: dict[str, Any], fields: dict[str, Any],
        launch_type: str = "manual",
    ) -> dict[str, Any]:  # fmt: skip
        job_id, now = self._new_job_id(), stamp(self.clock())
        launched_by, created_by = self._user(user)
        summary = {k: template[k] for k in ("id", "name", "description")}
        job: dict[str, Any] = {
            "id": job_id, "type": "job", "url": f"/api/v2/jobs/{job_id}/",
            "related": {"created_by": launched_by["url"]}
            | {k: f"/api/v2/jobs/{job_id}/{k}/" for k in ("stdout", "job_events", "cancel", "relaunch")}
            | {"job_template": template["url"], "unified_job_template": template["url"]},
            "summary_fields": {"organization": template["summary_fields"]["organization"], "job_template": summary,
                               "unified_job_template": summary | {"unified_job_type": "job"},
                               "created_by": created_by},
            "created": now, "modified": now, "name": template["name"], "description": template["description"],
            **{k: copy.deepcopy(template[k]) for k in _COPIED.split()}, "unified_job_template": template["id"],
            "launch_type": launch_type, "status": "pending", "failed": False, "started": None, "finished": None,
            "elapsed": 0.0, "extra_vars": json.dumps({**saved_vars(template["extra_vars"]), **variables}),
            "job_template": template["id"], "launched_by": launched_by, **copy.deepcopy(_JOB_DEFAULTS),
        }  # fmt: skip
        job |= {k: copy.deepcopy(v) for k, v in fields.items() if k in job}
        self.jobs[job_id] = job
        return job

    def _start(self, record: dict[str, Any]) -> None:
        """signal_start: the record takes the next script."""
        script = next(iter(self._scripts), self._default)
        if script.count is not None:
            script.count -= 1
            if script.count == 0:
                self._scripts.remove(script)
        self._progress[record["id"]] = Script(script.outcome, script.polls)

    def _cancel(self, record: dict[str, Any], method: str) -> Reply:
        """GenericCancelView + UnifiedJob.cancel."""
        can_cancel = record["status"] in CAN_CANCEL
        if method == "GET":
            return json_reply(200, {"can_cancel": can_cancel})
        if not can_cancel:
            raise Http(405, {"detail": 'Method "POST" not allowed.'})
        if not record["cancel_flag"]:
            record["cancel_flag"] = True
            record["canceled_on"] = record["canceled_on"] or stamp(self.clock())  # UnifiedJob.save
        self._progress.pop(record["id"], None)
        if record["status"] not in DISPATCHED or self.cancel_delay == 0:  # nobody to tell: canceled in the request
            self._cancels.pop(record["id"], None)
            self._set_status(record, "canceled")
        else:
            self._cancels.setdefault(record["id"], self.cancel_delay)
        return Reply(202)

    def _advance(self, record: dict[str, Any]) -> None:
        """A GET of the detail: a pending cancel counts down, else the script moves on."""
        ident, script = record["id"], self._progress.get(record["id"])
        if ident in self._cancels and record["status"] not in TERMINAL:
            left = self._cancels[ident]
            if left == 0:
                self._set_status(record, "canceled")
            elif left is not None:
                self._cancels[ident] = left - 1
        elif script is not None and record["status"] not in TERMINAL:
            script.seen += 1
            waiting = "pending" if script.seen == 1 else "running"
            self._set_status(record, script.outcome if script.seen > script.polls else waiting)
        if record["status"] in TERMINAL and "event_processing_finished" in record:
            record["event_processing_finished"] = ident in self._shown_terminal
            self._shown_terminal.add(ident)

    def _set_status(self, record: dict[str, Any], status: str) -> None:
        """UnifiedJob.save: failed, started, finished, elapsed, canceled_on follow the status."""
        now = self.clock()
        when = stamp(now)
        if status != record["status"]:
            record["modified"] = when
        record["status"], record["failed"] = status, status in ("failed", "error", "canceled")
        if status == "running" or (status in ("successful", "failed") and record["started"] is None):
            record["started"] = record["started"] or when  # a job that failed or succeeded did run
        if status not in TERMINAL:
            record.update(finished=None, elapsed=0.0)
            if "event_processing_finished" in record:
                record["event_processing_finished"] = False
            self._shown_terminal.discard(record["id"])
        else:
            record["finished"] = when
            record["elapsed"] = (
                round((now - parse_dt(record["started"])).total_seconds(), 3) if record["started"] else 0.0
            )
            self._cancels.pop(record["id"], None)
            if status == "canceled":
                record["canceled_on"] = record["canceled_on"] or when
            self._explain(record, status)
        if record["type"] == "workflow_job":
            self._sync_slices(record)

    def _explain(self, record: dict[str, Any], status: str) -> None:
        if record["job_explanation"]:
            return
        if record["type"] == "workflow_job" and status == "failed":  # task_manager.py spawn_workflow_graph_jobs
            record["job_explanation"] = "No error handling paths found, marking workflow as failed"
        elif record["type"] == "job" and status == "error":
            record["job_explanation"] = (
                'Previous Task Failed: {"job_type": "project_update", "job_name": "fragalysis-stack-kubernetes", '
                f'"job_id": "{record["id"] - 1}"}}'
            )

    def _job_view(self, job: dict[str, Any], omit: tuple[str, ...]) -> dict[str, Any]:
        view = {k: copy.deepcopy(v) for k, v in job.items() if k not in omit and k not in HIDDEN}
        if job["status"] == "running" and job["started"]:
            view["elapsed"] = round((self.clock() - parse_dt(job["started"])).total_seconds(), 3)
        if (parent := self._slice_parent.get(job["id"])) is not None:
            workflow = self.workflow_jobs[parent]
            view["summary_fields"]["source_workflow_job"] = {
                k: workflow[k] for k in ("id", "name", "description", "status", "failed", "elapsed")
            }
        return view | copy.deepcopy(self._overlays.get(job["id"], {}))


_NOT_FOUND = {"detail": "Not found."}

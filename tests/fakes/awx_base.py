"""Wire-level building blocks of the fake AWX (see tests/fakes/awx.py for what is faithful and where it comes from):
constants from AWX's source, answers, the error pages of AWX and of the nginx in front of it, `extra_vars` parsing,
query-string filtering and DRF paging."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any, Literal, NamedTuple, get_args
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

Kind = Literal[
    "launch", "job", "jobs", "templates", "cancel", "workflow_launch", "workflow_job", "workflow_jobs",
    "workflow_templates", "workflow_cancel", "any",
]  # fmt: skip
KINDS: tuple[str, ...] = get_args(Kind)
TERMINAL = frozenset({"successful", "failed", "error", "canceled"})
CAN_CANCEL = frozenset({"new", "pending", "waiting", "running"})  # awx/main/constants.py CAN_CANCEL
DISPATCHED = frozenset({"waiting", "running"})  # TaskManager.start_task has given them a celery_task_id
STATUSES = ("new", "pending", "waiting", "running", "successful", "failed", "error", "canceled")
VERSION = "24.6.1"
AUTHENTICATE = "Bearer realm=api authorization_url=/api/o/authorize/"
_SUFFIX = " To establish a login session, visit /api/login/."
NOT_PROVIDED = "Authentication credentials were not provided." + _SUFFIX
BAD_PASSWORD = "Invalid username/password." + _SUFFIX
BAD_BASIC = "Invalid basic header. Credentials not correctly base64 encoded." + _SUFFIX
SERVER_ERROR = {"detail": "A server error has occurred."}  # awx/main/views.py handle_500, for paths under /api/
# prevent_search fields per model: UnifiedJob job_args/job_env/start_args, JobOptions and WorkflowJobOptions extra_vars,
# SurveyJobMixin survey_passwords, SurveyJobTemplateMixin survey_spec, WebhookTemplateMixin webhook_key,
# JobTemplate host_config_key (awx/main/models/{unified_jobs,jobs,workflow,mixins}.py)
PREVENT_SEARCH = frozenset({"extra_vars", "job_args", "job_env", "start_args", "survey_passwords"})
_PREVENTED = {
    "Job": PREVENT_SEARCH, "WorkflowJob": PREVENT_SEARCH,
    "JobTemplate": frozenset({"extra_vars", "host_config_key", "survey_spec", "webhook_key"}),
    "WorkflowJobTemplate": frozenset({"extra_vars", "survey_spec", "webhook_key"}),
}  # fmt: skip
_TEXT_LOOKUPS = ("iexact", "contains", "icontains", "startswith")
_LOOKUPS = frozenset({*_TEXT_LOOKUPS, "exact", "gt", "gte", "lt", "lte", "in", "isnull"})
_RESERVED = frozenset({"page", "page_size", "order", "order_by", "count_disabled", "format"})
_BASE = {"id": "int", "created": "dt", "modified": "dt", "name": "str", "description": "str", "organization": "int"}
_UNIFIED_JOB = _BASE | {"unified_job_template": "int", "launch_type": "str", "status": "str", "failed": "bool",
                        "started": "dt", "finished": "dt", "canceled_on": "dt", "elapsed": "float",
                        "cancel_flag": "bool"}  # fmt: skip
FIELDS: dict[str, dict[str, str]] = {  # filterable and sortable model fields and their types
    "Job": _UNIFIED_JOB | dict.fromkeys(["inventory", "project", "job_template", "job_slice_number",
                                         "job_slice_count"], "int")
    | {"job_type": "str", "playbook": "str", "limit": "str"},
    "WorkflowJob": _UNIFIED_JOB | dict.fromkeys(["workflow_job_template", "job_template", "inventory"], "int")
    | {"is_sliced_job": "bool", "limit": "str", "scm_branch": "str"},
    "JobTemplate": _BASE | dict.fromkeys(["inventory", "project"], "int") | {"job_type": "str", "playbook": "str"}
    | {"status": "str"} | dict.fromkeys(["ask_variables_on_launch", "survey_enabled", "allow_simultaneous"], "bool"),
    "WorkflowJobTemplate": _BASE | {"inventory": "int", "status": "str"}
    | dict.fromkeys(["ask_variables_on_launch", "survey_enabled", "allow_simultaneous"], "bool"),
}  # fmt: skip
_YAML_WORDS = {"": None, "~": None, "null": None} | dict.fromkeys(["yes", "true", "on"], True)
_YAML_WORDS |= dict.fromkeys(["no", "false", "off"], False)  # YAML 1.1, as PyYAML's safe_load reads them
API_HEADERS = {"X-API-Product-Name": "AWX", "X-API-Node": "awx-fake", "X-API-Time": "0.012s"}
ROUTES: list[tuple[re.Pattern[str], tuple[str, ...], str]] = [  # (path, kinds for faults, route)
    (re.compile(rf"^/api/v2/{path}$"), kinds, route)
    for path, kinds, route in [
        (r"job_templates/", ("templates",), "template_list"),
        (r"job_templates/(\d+)/", ("templates",), "template"),
        (r"job_templates/(\d+)/launch/", ("launch",), "launch"),
        (r"job_templates/(\d+)/jobs/", ("jobs",), "template_jobs"),
        (r"jobs/", ("jobs",), "job_list"),
        (r"jobs/(\d+)/", ("job",), "job"),
        (r"jobs/(\d+)/cancel/", ("job", "cancel"), "cancel"),
        (r"workflow_job_templates/", ("workflow_templates",), "workflow_template_list"),
        (r"workflow_job_templates/(\d+)/", ("workflow_templates",), "workflow_template"),
        (r"workflow_job_templates/(\d+)/launch/", ("workflow_launch",), "workflow_launch"),
        (r"workflow_job_templates/(\d+)/workflow_jobs/", ("workflow_jobs",), "workflow_template_jobs"),
        (r"workflow_jobs/", ("workflow_jobs",), "workflow_job_list"),
        (r"workflow_jobs/(\d+)/", ("workflow_job",), "workflow_job"),
        (r"workflow_jobs/(\d+)/cancel/", ("workflow_job", "workflow_cancel"), "workflow_cancel"),
    ]
]
_NGINX_TITLES = {500: "500 Internal Server Error", 502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable",
                 504: "504 Gateway Time-out"}  # fmt: skip


class Recorded(NamedTuple):
    method: str
    path: str  # with the query string
    headers: dict[str, str]  # keys lower-cased
    body: bytes


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
    after: bool = False  # hangs: process the request first, then withhold the answer
    creates: bool = False  # gateway errors: AWX behind the gateway still processes the request
    after_requests: int = 0  # ... once this many later requests have been answered


@dataclass
class Script:
    outcome: str
    polls: int
    count: int | None = None  # None: every later job
    seen: int = 0


def json_reply(status: int, payload: object, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})


def nginx_page(status: int) -> Reply:
    """The error page nginx (and ingress-nginx, server_tokens off) writes itself: ngx_http_special_response.c."""
    title = _NGINX_TITLES.get(status, f"{status} Error")
    page = f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
    return Reply(status, (page + "<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n").encode(),
                 {"Content-Type": "text/html"})  # fmt: skip


def stamp(moment: datetime) -> str:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_dt(text: str) -> datetime:
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


def saved_vars(text: str) -> dict[str, Any]:
    """A template's `extra_vars_dict`: its saved text parsed (silently empty when unparsable)."""
    try:
        return parse_vars(text or "{}")
    except ValueError:
        return {}


def request_data(body: bytes) -> dict[str, Any]:
    """A launch body as DRF's JSONParser and a Serializer take it: 400 unless a JSON object."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise Http(400, {"detail": f"JSON parse error - {exc}"}) from None
    if not isinstance(data, dict):
        raise Http(400, {"__all__": [f"Invalid data. Expected a dictionary, but got {type(data).__name__}."]})
    return data


def filter_items(model: str, items: list[dict[str, Any]], params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """django-ansible-base FieldLookupBackend (rest_filters/utils.py get_fields_from_path) + OrderByBackend, as far
    as modelled (see FIELDS)."""
    fields = FIELDS[model]
    for key, raw in params:
        if key in _RESERVED:
            continue
        parts = key.removeprefix("not__").split("__")
        if parts[0] == "start_args" and model in ("Job", "WorkflowJob"):  # UnifiedJob.PASSWORD_FIELDS, checked first
            raise Http(403, {"detail": "Filtering on password fields is not allowed."})
        if parts[0] in _PREVENTED[model]:
            raise Http(403, {"detail": f"Filtering on {parts[0]} is not allowed."})
        lookup = parts.pop() if len(parts) > 1 and parts[-1] in _LOOKUPS else "exact"
        name = "__".join(parts)
        if name not in fields or key.startswith(("or__", "chain__")):
            raise Http(400, {"detail": f"fake AWX does not model the filter {key!r} on {model}"})
        kind = "bool" if lookup == "isnull" else fields[name]
        if lookup == "in":
            arg: Any = [_convert(name, kind, v) for v in raw.split(",")]
        else:
            arg = raw if lookup in _TEXT_LOOKUPS else _convert(name, kind, raw)
        negate = key.startswith("not__")
        items = [i for i in items if _match(_stored(i.get(name), fields[name]), lookup, arg) != negate]
    order = [v for k, v in params if k in ("order", "order_by")]
    for key in reversed([*(order[-1].split(",") if order else []), "id"]):
        name = key.removeprefix("-")
        if name not in fields:
            raise Http(400, {"detail": f"fake AWX does not model ordering by {name!r} on {model}"})
        items.sort(key=_sort_key(name), reverse=key[0] == "-")  # NULLs last ascending, first descending: PostgreSQL
    return items


def page(target: str, results: list[dict[str, Any]], params: list[tuple[str, str]], *, repeat: bool = False) -> Reply:
    """awx/api/pagination.py Pagination; repeat: `next` names the page just answered (a broken server)."""
    query = dict(params)
    if "count_disabled" in query:
        return json_reply(200, {"results": results})
    size = min(_positive(query.get("page_size")) or 25, 200)
    pages = max(1, -(-len(results) // size))
    number = pages if query.get("page") == "last" else _positive(query.get("page", "1"))
    if number is None or number > pages:
        raise Http(404, {"detail": "Invalid page."})
    following = _replace_page(target, number + 1) if number < pages else None
    return json_reply(200, {
        "count": len(results),
        "next": _replace_page(target, number) if repeat else following,
        "previous": _replace_page(target, number - 1) if number > 1 else None,
        "results": results[(number - 1) * size : number * size],
    })  # fmt: skip


def _positive(raw: str | None) -> int | None:
    """DRF's _positive_int(strict=True): a positive int, else None."""
    try:
        value = int(raw) if raw is not None else 0
    except ValueError:
        return None
    return value if value > 0 else None


def _replace_page(target: str, number: int) -> str:
    split = urlsplit(target)
    query = parse_qs(split.query, keep_blank_values=True) | {"page": [str(number)]}
    return urlunsplit(("", "", split.path, urlencode(sorted(query.items()), doseq=True), ""))


def _stored(value: Any, kind: str) -> Any:
    return parse_dt(value) if kind == "dt" and value is not None else value


def _bool(raw: str) -> bool:
    if raw.lower() not in ("true", "1", "yes", "false", "0", "no"):
        raise ValueError(raw)
    return raw.lower() in ("true", "1", "yes")


_CONVERTERS: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "dt": parse_dt, "bool": _bool, "str": str}
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
        raise Http(400, {"detail": _BAD_VALUE[kind].format(name=name, raw=raw)}) from None


def _sort_key(name: str) -> Callable[[dict[str, Any]], tuple[bool, Any]]:
    return lambda item: (item.get(name) is None, 0 if item.get(name) is None else item[name])


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
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):  # a hung answer whose client is gone
            self.close_connection = True

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass

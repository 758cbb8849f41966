"""Launch an AWX job template or workflow job template, and follow its job until it ends (AWX REST API v2).

What AWX really does, and what this module does about it (checked against AWX 24.6.1's source, github.com/ansible/awx):
- Every launch carries a marker extra var (`reconciler_action = "<watch>#<action id>"`, named by the server's
  `marker`), so a launch whose answer was lost is matched to its own job only, never to a look-alike an operator
  launched by hand. With the marker off, the job is matched by all of its extra vars, created after our record.
- `ignored_fields.extra_vars`: AWX started the job anyway, with the template's saved vars
  (`JobTemplateLaunch.post`). That job is recorded, canceled at once, and the action fails with the "Prompt on
  launch" hint, not retried until the watch's action changes.
- A sliced job template answers `workflow_job` instead of `job`; workflow job templates launch at
  `workflow_job_templates/<id>/launch/`. Both are followed at `workflow_jobs/<id>/`.
- A cancel is a request (202 sets `cancel_flag`; the status changes later): an action whose job outlived its
  timeout fails only once the job has really ended; until then it stays open and nothing is launched beside it.
- One odd record (a huge `elapsed`, a job without an id) is read defensively and never fails the others.
AWX refuses filters on `extra_vars`, so candidates are listed by template and creation time and matched here.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Mapping, Set
from datetime import datetime, timedelta
from typing import Any

from reconciler import errors, model
from reconciler.actuators import boundary
from reconciler.actuators.awx_client import AwxClient, JobRef, Server

__all__ = ["AwxActuator", "AwxClient", "JobRef", "Server"]
log = logging.getLogger(__name__)
TERMINAL = frozenset({"successful", "failed", "error", "canceled"})
CLOCK_SKEW = timedelta(seconds=30)  # how far AWX's clock may be behind ours when matching by extra vars alone
# A marker is unique within one database, so its job is looked for further back than AWX's clock could lag; not
# so far that a job of an earlier database (a reset SQLite file restarts the ids) could be taken for ours.
MARKER_WINDOW = timedelta(minutes=10)
MAX_POLL_DELAY = 15.0  # well under a third of the default lease, which the waits renew between polls
CANCEL_GRACE = timedelta(minutes=2)  # how long a requested cancel may take before the wait hands over to a later pass
BLIND_LIMIT = timedelta(minutes=5)  # how long a job may be unreadable (401, 404, AWX away) before the same


_LAUNCH_URL = re.compile(r"/api/v2/(job_templates|workflow_job_templates)/(\d+)/launch/$")


def template_of(launch_url: str) -> tuple[str, int] | None:
    """The template's collection and id in a launch URL (`…/api/v2/job_templates/<id>/launch/`)."""
    found = _LAUNCH_URL.search(launch_url)
    return (found.group(1), int(found.group(2))) if found else None


def render_extra_vars(spec: model.AwxAction, target: model.Target) -> dict[str, model.ExtraVar]:
    values = target.placeholders()
    return {k: v.format_map(values) if isinstance(v, str) else v for k, v in spec.extra_vars.items()}


def _vars_of(job: Mapping[str, Any]) -> dict[str, Any]:
    raw = job.get("extra_vars")
    try:
        parsed = json.loads(raw) if isinstance(raw, str) else raw
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _seconds(value: object) -> float | None:
    """A job's `elapsed`, if it is a sensible number of seconds."""
    try:
        seconds = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and 0 <= seconds < 1e9 else None


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

    @boundary.guard("fail", system="AWX", error=errors.AwxError)
    def request(self, spec: model.AwxAction, target: model.Target) -> dict[str, Any]:
        """The exact launch request, resolving the template id (read-only calls to AWX only)."""
        client = self._client(spec)
        template_id = client.template_id(spec.template, workflow=spec.workflow)
        collection = "workflow_job_templates" if spec.workflow else "job_templates"
        return {
            "method": "POST",
            "url": client.url(f"{collection}/{template_id}/launch"),
            "body": {"extra_vars": render_extra_vars(spec, target)},
        }

    @boundary.guard("fail", system="AWX", error=errors.AwxError)
    def mark(self, spec: model.AwxAction, request: Mapping[str, Any], marker: str) -> dict[str, Any]:
        """The request with the server's marker extra var naming the action it belongs to (none when off)."""
        name = self._client(spec).server.marker
        body = dict(request.get("body") or {})
        if name:
            body["extra_vars"] = {**dict(body.get("extra_vars") or {}), name: marker}
        return {**request, "body": body}

    @boundary.guard("unknown", system="AWX", error=errors.AwxError)
    def launch(
        self, spec: model.AwxAction, request: Mapping[str, Any], *, keep_alive: Callable[[], None] = lambda: None
    ) -> model.Launch:
        """POST the recorded request once (never retried: its answer decides what happened)."""
        client = self._client(spec)
        url = str(request["url"])
        template = template_of(url)
        what = f"launching {'workflow job template' if spec.workflow else 'job template'} {template and template[1]}"
        answer = client.launch(url, request["body"], what=what)
        if isinstance(answer.get("job"), int) and not isinstance(answer.get("job"), bool):
            job = JobRef("jobs", answer["job"])
        elif isinstance(answer.get("workflow_job"), int) and not isinstance(answer.get("workflow_job"), bool):
            job = JobRef("workflow_jobs", answer["workflow_job"])  # a workflow, or a sliced job template
        else:
            raise errors.LaunchOutcomeUnknown(f"AWX {spec.server} answered the launch without a job id", answered=True)
        abort = None
        ignored = answer.get("ignored_fields")
        if isinstance(ignored, dict) and ignored.get("extra_vars"):
            dropped = ignored["extra_vars"]
            names = sorted(map(str, dropped)) if isinstance(dropped, dict) else ["?"]
            fix = f'enable "Prompt on launch" for variables on template {spec.template!r}'
            if names == [client.server.marker]:  # a survey takes its own vars, not ours: only the marker went
                fix += f' or set marker = "" in [awx.{spec.server}]'
            abort = (
                f"AWX {spec.server} started {job.noun} but ignored the extra vars {', '.join(names)}, so it would "
                f"run without them: {fix}"
            )
        return model.Launch(ref=str(job), link=client.link(job), abort=abort)

    @boundary.guard("fail", system="AWX", error=errors.AwxError)
    def find(
        self, spec: model.AwxAction, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None:
        """The job a launch whose answer was lost may have created: by its marker when the launch carried one,
        else by all of its extra vars among the template's jobs created after our record; never a job already
        recorded by another action (`exclude`), nor a slice job spawned by a workflow."""
        client = self._client(spec)
        request: Mapping[str, Any] = record.request or {}
        template = template_of(str(request.get("url", "")))
        if template is None:
            return None  # no launch request was ever written for this record, so none was sent
        body = request.get("body")
        wanted = dict(body.get("extra_vars") or {}) if isinstance(body, dict) else {}
        name = client.server.marker
        by_marker = bool(name) and name in wanted
        since = record.planned_at - (MARKER_WINDOW if by_marker else CLOCK_SKEW)
        collection, template_id = template
        if collection == "workflow_job_templates":
            lists = [("workflow_jobs", {"workflow_job_template": str(template_id)})]
        else:  # a sliced job template runs as a workflow job that names it
            by_template = {"job_template": str(template_id)}
            lists = [("jobs", by_template), ("workflow_jobs", by_template)]
        for kind, filters in lists:
            for job in client.recent(kind, since=since, **filters):
                job_id = job.get("id")
                if not isinstance(job_id, int) or isinstance(job_id, bool) or job.get("launch_type") == "workflow":
                    continue
                ref = JobRef(kind, job_id)
                if str(ref) in exclude:
                    continue
                values = _vars_of(job)
                keys = [name] if by_marker else list(wanted)
                if all(values.get(k) == wanted[k] for k in keys):
                    return model.Launch(ref=str(ref), link=client.link(ref))
        return None

    @boundary.guard("unfinished", system="AWX", error=errors.AwxError)
    def wait(
        self,
        spec: model.AwxAction,
        record: model.ActionRecord,
        *,
        keep_alive: Callable[[], None],
        progress: Callable[[str, str, datetime], None] = lambda *_: None,
    ) -> model.Finish | model.Unfinished:
        """Poll the job with back-off until it ends. Past the server's `timeout` (counted from the launch), or at
        once when the launch must be aborted, the job is canceled and followed until the cancel took effect.

        The wait hands over to a later pass (`Unfinished`, the action stays open) rather than wait on blindly:
        when a cancel has not taken effect within CANCEL_GRACE, or the job could not be read for BLIND_LIMIT."""
        client = self._client(spec)
        job_ref = JobRef.parse(record.external_ref or "")
        started = record.launched_at or self._clock()
        deadline = started if record.abort else started + client.server.timeout
        delay = max(client.server.poll.total_seconds(), 0.01)
        status, problem = "unknown", ""
        canceled_at: datetime | None = None  # when AWX accepted the cancel (or said the job had ended)
        cancel_since: datetime | None = None  # when canceling began, whether or not AWX could be asked
        read_at = self._clock()  # when the job was last read
        link = client.link(job_ref)
        while True:
            try:
                job = client.job(job_ref)
                status, read_at, fresh = " ".join(str(job.get("status")).split())[:40], self._clock(), True
                problem = ""
            except errors.AwxError as exc:  # a blip while waiting is not the job failing: keep polling
                if str(exc) != problem:  # said once while it lasts; the outcome, if it comes to that, warns
                    log.info("watch %s: %s; polling again", record.watch, exc)
                job, problem, fresh = {}, str(exc), False
            if fresh and status in TERMINAL:
                return self._finish(job, job_ref, status, client=client, record=record, canceled_at=canceled_at)
            now = self._clock()
            if now - read_at >= BLIND_LIMIT:
                return model.Unfinished(
                    f"{job_ref.noun} could not be read for {int(BLIND_LIMIT.total_seconds())}s ({problem}); "
                    f"it is followed again in the next pass ({link})"
                )
            if now >= deadline and canceled_at is None:
                cancel_since = cancel_since or now
                try:
                    accepted = client.cancel(job_ref)  # False (405): it has just ended; the next read says how
                except errors.AwxError as exc:
                    log.warning("watch %s: could not cancel %s yet: %s", record.watch, job_ref.noun, exc)
                else:
                    canceled_at = now
                    if accepted:
                        log.warning("watch %s: %s: cancel requested", record.watch, job_ref.noun)
                    continue
            if cancel_since is not None and now - cancel_since >= CANCEL_GRACE:
                asked = "its cancel was requested" if canceled_at else "canceling it began (AWX did not take it yet)"
                return model.Unfinished(
                    f"{job_ref.noun} is still {status} {int(CANCEL_GRACE.total_seconds())}s after {asked}; "
                    f"it is followed again in the next pass ({link})"
                )
            progress(f"AWX {job_ref.noun}", status if fresh else f"{status}, unreadable now", started)
            keep_alive()
            self._sleep(delay if now >= deadline else min(delay, (deadline - now).total_seconds()))
            delay = min(delay * 1.5, max(client.server.poll.total_seconds(), MAX_POLL_DELAY))

    @staticmethod
    def _finish(
        job: Mapping[str, Any],
        job_ref: JobRef,
        status: str,
        *,
        client: AwxClient,
        record: model.ActionRecord,
        canceled_at: datetime | None,
    ) -> model.Finish:
        seconds = _seconds(job.get("elapsed"))
        took = f" in {seconds:.0f}s" if seconds is not None else ""
        link = client.link(job_ref)
        if record.abort:
            return model.Finish(False, f"{record.abort}; {job_ref.noun} was {status}{took} ({link})", final=True)
        if canceled_at is not None and status == "canceled":
            return model.Finish(
                False, f"{job_ref.noun} ran past the timeout of {client.server.timeout}; canceled{took} ({link})"
            )
        if status == "successful":
            return model.Finish(True, f"{job_ref.noun} successful{took}")
        explanation = str(job.get("job_explanation") or "").strip().splitlines()
        why = f": {explanation[0][:200]}" if explanation else ""
        return model.Finish(False, f"{job_ref.noun} {status}{took}{why} ({link})")

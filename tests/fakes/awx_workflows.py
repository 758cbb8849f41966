"""Workflow job templates, workflow jobs and sliced job templates of the fake AWX (mixed into tests/fakes/awx.py
FakeAwx), checked in awx devel e21dd0a (= 24.6.1+145):
* Workflow job templates (WorkflowJobTemplateSerializer fields, ids shared with job templates as UnifiedJobTemplates):
  `/api/v2/workflow_job_templates/` (filters incl. exact `name`), `/<id>/`, `/<id>/workflow_jobs/`, `/<id>/launch/`.
  GET launch → WorkflowJobLaunchSerializer's readable fields; `can_start_without_user_input` is true unless a survey
  needs answers (WorkflowJobTemplate.can_start_without_user_input; the ask_* flags do not count, unlike a job
  template's). POST launch (views WorkflowJobTemplateLaunch.post) → 201 `{"workflow_job", "ignored_fields", <WorkflowJob
  Serializer>}` + absolute Location. Un-prompted values are NOT ignored as for job templates: the serializer calls
  WorkflowJobTemplate._accept_or_ignore_job_kwargs without _exclude_errors=['prompts'], so un-prompted variables that
  differ from the saved ones → 400 `{"extra_vars": ["Variables a, b are not allowed on launch. Check the Prompt on
  Launch setting on the Workflow Job Template to include Extra Variables."]}` (mixins.py
  SurveyJobTemplateMixin._accept_or_ignore_variables), other un-prompted fields (inventory, limit, scm_branch, labels,
  job_tags, skip_tags) → 400 `{"<field>": ["Field is not configured to prompt on launch."]}`; `ignored_fields` is
  thus always `{}` on a 201. extra_vars parse errors → 400 as for jobs (UnifiedJobTemplate.accept_or_ignore_variables).
* Workflow jobs (WorkflowJob, WorkflowJobSerializer: no execution_environment, execution_node, controller_node,
  event_processing_finished; WorkflowJobListSerializer also drops job_args, job_cwd, job_env, result_traceback):
  `/api/v2/workflow_jobs/`, `/<id>/`, `/<id>/cancel/`; `extra_vars` = json.dumps(template vars updated by the accepted
  runtime vars) (SurveyJobTemplateMixin._update_unified_job_kwargs); limit/scm_branch/job_tags/skip_tags null unless
  set (char_prompts). Filters on extra_vars, job_args, job_env, survey_passwords, start_args → 403 as for jobs
  (test_filters.py lists WorkflowJobOptions extra_vars, WorkflowJob survey_passwords). Progress by `script`, like
  jobs; a failed workflow job explains "No error handling paths found, marking workflow as failed" (task_manager.py
  WorkflowManager.spawn_workflow_graph_jobs).
* Sliced job templates (jobs.py JobTemplate.create_unified_job, get_effective_slice_ct): slice count = the (prompted)
  job_slice_count, at most `inventory_hosts`; > 1 → the launch creates a WorkflowJob with `job_template` = the
  template, `unified_job_template` = the template, `workflow_job_template` null, `is_sliced_job` true, answered as
  `workflow_job` with no `job` key (views JobTemplateLaunch.post); a template set to slice without enough hosts gives a
  plain job with `job_slice_count` 1. The slice jobs do not exist at launch: the workflow manager spawns them when it
  runs the workflow job (WorkflowJobNode.get_job_kwargs), so they appear when it first shows `running` (or a terminal
  outcome), `pending`, then `running` with it, as Jobs with launch_type `workflow`, `job_slice_number` 1..N,
  `job_slice_count` N, allow_simultaneous true, job_template and unified_job_template = the template, the same
  extra_vars as the workflow job, launched_by its creator (UnifiedJob.launched_by via ancestor_job), related and
  summary_fields `source_workflow_job`.
Assumed: when the workflow job ends, its slices end with it (successful: all; failed: slice 1 failed, the others
successful; error: all error; canceled: all canceled), and a slice's own status does not feed back into its workflow
job; the workflow manager's cancel of node jobs shows when the workflow job turns canceled.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from tests.fakes.awx_base import (
    TERMINAL,
    Http,
    Reply,
    filter_items,
    json_reply,
    page,
    parse_dt,
    parse_vars,
    request_data,
    saved_vars,
    stamp,
)

_WFJT_DEFAULTS: dict[str, Any] = {
    "description": "", "last_job_run": None, "last_job_failed": False, "next_job_run": None,
    "status": "never updated", "extra_vars": "", "organization": None, "survey_enabled": False,
    "allow_simultaneous": False, "ask_variables_on_launch": False, "inventory": None, "limit": None, "scm_branch": None,
    "ask_inventory_on_launch": False, "ask_scm_branch_on_launch": False, "ask_limit_on_launch": False,
    "webhook_service": "", "webhook_credential": None, "ask_labels_on_launch": False, "ask_skip_tags_on_launch": False,
    "ask_tags_on_launch": False, "skip_tags": None, "job_tags": None,
}  # fmt: skip
# WorkflowJobTemplate.get_ask_mapping(), in SurveyJobTemplateMixin's field order
_WF_ASKS = {"inventory": "ask_inventory_on_launch", "limit": "ask_limit_on_launch",
            "scm_branch": "ask_scm_branch_on_launch", "labels": "ask_labels_on_launch",
            "job_tags": "ask_tags_on_launch", "skip_tags": "ask_skip_tags_on_launch",
            "extra_vars": "ask_variables_on_launch"}  # fmt: skip
_CHAR_PROMPTS = ("limit", "scm_branch", "job_tags", "skip_tags")
_WF_LIST_OMITS = ("job_args", "job_cwd", "job_env", "result_traceback")
_WF_HIDDEN = ("cancel_flag",)
_NOT_FOUND = {"detail": "Not found."}


class WorkflowsMixin:
    """The workflow half of FakeAwx; it relies on the attributes and methods FakeAwx defines."""

    lock: threading.RLock
    clock: Callable[[], datetime]
    base: str
    inventory_hosts: int | None
    templates: dict[int, dict[str, Any]]
    workflow_templates: dict[int, dict[str, Any]]
    jobs: dict[int, dict[str, Any]]
    workflow_jobs: dict[int, dict[str, Any]]
    workflow_launches: list[tuple[int, dict[str, Any]]]
    _overlays: dict[int, dict[str, Any]]
    _slice_parent: dict[int, int]  # slice job id -> its workflow job
    _slice_plans: dict[int, tuple[int, str, dict[str, Any], dict[str, Any], int]]  # workflow job -> how to slice
    _slices: dict[int, list[int]]  # sliced workflow job -> its slice jobs, once spawned

    if TYPE_CHECKING:

        def _new_template_id(self, wanted: int | None) -> int: ...
        def _org(self, name: str) -> int: ...
        def _new_job_id(self) -> int: ...
        def _user(self, user: str) -> tuple[dict[str, Any], dict[str, Any]]: ...
        def _template_view(self, template: dict[str, Any]) -> dict[str, Any]: ...
        def _start(self, record: dict[str, Any]) -> None: ...
        def _advance(self, record: dict[str, Any]) -> None: ...
        def _set_status(self, record: dict[str, Any], status: str) -> None: ...
        def _unified(
            self, ident: int, *, workflow: bool | None = None, missing: Exception | None = None
        ) -> dict[str, Any]: ...
        def _new_job(
            self, template: dict[str, Any], user: str, variables: dict[str, Any], fields: dict[str, Any],
            launch_type: str = "manual",
        ) -> dict[str, Any]: ...  # fmt: skip

    def add_workflow_template(
        self,
        name: str,
        *,
        id: int | None = None,
        ask_variables_on_launch: bool = True,
        extra_vars: str = "",
        organization: str = "Default",
        **fields: Any,
    ) -> int:
        """Add a workflow job template (other WorkflowJobTemplateSerializer fields via `fields`, e.g.
        ask_limit_on_launch=True, limit="x"); returns its id. It has no nodes: its jobs only follow their script."""
        if unknown := set(fields) - set(_WFJT_DEFAULTS):
            raise ValueError(f"unknown workflow job template fields: {sorted(unknown)}")
        with self.lock:
            tid, org = self._new_template_id(id), self._org(organization)
            now, url = stamp(self.clock()), f"/api/v2/workflow_job_templates/{tid}/"
            related = ("workflow_jobs", "schedules", "launch", "webhook_key", "workflow_nodes", "labels",
                       "activity_stream", "access_list", "object_roles", "survey_spec", "copy")  # fmt: skip
            self.workflow_templates[tid] = {
                "id": tid, "type": "workflow_job_template", "url": url,
                "related": {k: f"{url}{k}/" for k in related}
                | {"webhook_receiver": "", "organization": f"/api/v2/organizations/{org}/"},
                "summary_fields": {"organization": {"id": org, "name": organization, "description": ""},
                                   "labels": {"count": 0, "results": []}},
                "created": now, "modified": now, "name": name, **copy.deepcopy(_WFJT_DEFAULTS),
                "extra_vars": extra_vars, "organization": org, "ask_variables_on_launch": ask_variables_on_launch,
                **fields,
            }  # fmt: skip
        return tid

    def _workflow_template(self, ident: int) -> dict[str, Any]:
        if ident not in self.workflow_templates:
            raise Http(404, _NOT_FOUND)
        return self.workflow_templates[ident]

    def _workflow_dispatch(self, method: str, route: str, ident: int, target: str, user: str, body: bytes,
                           params: list[tuple[str, str]], repeat: bool) -> Reply:  # fmt: skip
        if route == "workflow_template_list":
            views = [self._template_view(t) for t in self.workflow_templates.values()]
            return page(target, filter_items("WorkflowJobTemplate", views, params), params, repeat=repeat)
        if route in ("workflow_job_list", "workflow_template_jobs"):
            if route == "workflow_template_jobs":
                params.append(("workflow_job_template", str(self._workflow_template(ident)["id"])))
            items = filter_items("WorkflowJob", list(self.workflow_jobs.values()), params)
            return page(target, [self._workflow_job_view(j, _WF_LIST_OMITS) for j in items], params, repeat=repeat)
        if route == "workflow_job":
            record = self._unified(ident, workflow=True, missing=Http(404, _NOT_FOUND))
            self._advance(record)
            return json_reply(200, self._workflow_job_view(record, ()))
        template = self._workflow_template(ident)
        if route == "workflow_template":
            return json_reply(200, self._template_view(template))
        if route == "workflow_launch" and method == "GET":
            return json_reply(200, self._workflow_launch_info(template))
        if route == "workflow_launch":
            record, received = self._workflow_launch_record(template, user, request_data(body))
            self.workflow_launches.append((template["id"], received))
            answer = {"workflow_job": record["id"], "ignored_fields": {}, **self._workflow_job_view(record, ())}
            return json_reply(201, answer, {"Location": f"{self.base}{record['url']}"})
        raise Http(404, {"detail": "The requested resource could not be found."})

    def _workflow_launch_info(self, template: dict[str, Any]) -> dict[str, Any]:
        """WorkflowJobLaunchSerializer, its readable fields (the prompt fields themselves are write-only)."""
        inventory = template["inventory"]
        defaults = {"inventory": {"name": "Demo Inventory" if inventory else None, "id": inventory}}
        defaults |= {k: template[k] for k in ("limit", "scm_branch", "job_tags", "skip_tags", "extra_vars")}
        return {
            **{k: template[k] for k in ("ask_inventory_on_launch", "ask_limit_on_launch", "ask_scm_branch_on_launch")},
            "can_start_without_user_input": True, "defaults": defaults, "survey_enabled": False,
            "variables_needed_to_start": [], "node_templates_missing": [], "node_prompts_rejected": [],
            "workflow_job_template_data": {k: template[k] for k in ("name", "id", "description")},
            **{k: template[k] for k in ("ask_variables_on_launch", "ask_labels_on_launch", "ask_skip_tags_on_launch",
                                        "ask_tags_on_launch")},
        }  # fmt: skip

    def _workflow_launch_record(
        self, template: dict[str, Any], user: str, data: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """WorkflowJobLaunchSerializer.validate → WorkflowJobTemplate._accept_or_ignore_job_kwargs (errors block),
        create_unified_job, signal_start: (the new workflow job, extra_vars as received)."""
        errors: dict[str, list[str]] = {}
        accepted: dict[str, Any] = {}
        received: dict[str, Any] = {}
        for name, flag in _WF_ASKS.items():
            if name == "extra_vars":
                try:
                    received = parse_vars(data.get("extra_vars", {}))
                except ValueError as exc:
                    errors["extra_vars"] = [str(exc)]
                    continue
                saved = saved_vars(template["extra_vars"])
                left = {k: v for k, v in received.items() if k not in saved or saved[k] != v}
                if template[flag] and received:
                    accepted["extra_vars"] = received
                elif not template[flag] and left:
                    errors["extra_vars"] = [
                        f"Variables {', '.join(str(k) for k in left)} are not allowed on launch. Check the Prompt on "
                        "Launch setting on the Workflow Job Template to include Extra Variables."
                    ]
            elif name in data and data[name] != template.get(name, []):  # a label list compares with no labels
                if template[flag]:
                    accepted[name] = data[name]
                else:
                    errors[name] = ["Field is not configured to prompt on launch."]
        if errors:
            raise Http(400, errors)
        record = self._workflow_record(template, user, accepted.pop("extra_vars", {}), accepted, sliced=False)
        self._start(record)
        return record, received

    def _new_sliced_workflow_job(self, template: dict[str, Any], user: str, variables: dict[str, Any],
                                 prompts: dict[str, Any], slices: int) -> dict[str, Any]:  # fmt: skip
        record = self._workflow_record(template, user, variables, prompts, sliced=True)
        self._slice_plans[record["id"]] = (
            template["id"],
            user,
            copy.deepcopy(variables),
            copy.deepcopy(prompts),
            slices,
        )
        return record

    def _workflow_record(self, template: dict[str, Any], user: str, variables: dict[str, Any],
                         prompts: dict[str, Any], *, sliced: bool) -> dict[str, Any]:  # fmt: skip
        """UnifiedJobTemplate.create_unified_job for a WorkflowJob, from a workflow job template or (sliced) from a
        job template: copy_model_by_class copies the template's values (char prompts only when not null)."""
        wid, now = self._new_job_id(), stamp(self.clock())
        url = f"/api/v2/workflow_jobs/{wid}/"
        launched_by, created_by = self._user(user)
        summary = {k: template[k] for k in ("id", "name", "description")}
        chars = {k: prompts.get(k, template[k]) for k in _CHAR_PROMPTS}
        parent = "job_template" if sliced else "workflow_job_template"
        related = {"created_by": launched_by["url"], "unified_job_template": template["url"], parent: template["url"]}
        if not sliced:
            related["notifications"] = f"{url}notifications/"
        related |= {k: f"{url}{k}/" for k in ("workflow_nodes", "labels", "activity_stream", "relaunch", "cancel")}
        record: dict[str, Any] = {
            "id": wid, "type": "workflow_job", "url": url, "related": related,
            "summary_fields": {"organization": template["summary_fields"]["organization"], parent: summary,
                               "unified_job_template": summary | {"unified_job_type": "job" if sliced else
                                                                  "workflow_job"},
                               "created_by": created_by, "labels": {"count": 0, "results": []}},
            "created": now, "modified": now, "name": template["name"], "description": template["description"],
            "unified_job_template": template["id"], "launch_type": "manual", "status": "pending", "failed": False,
            "started": None, "finished": None, "canceled_on": None, "elapsed": 0.0, "job_args": "", "job_cwd": "",
            "job_env": {}, "job_explanation": "", "result_traceback": "", "launched_by": launched_by,
            "work_unit_id": None, "workflow_job_template": None if sliced else template["id"],
            "extra_vars": json.dumps({**saved_vars(template["extra_vars"]), **variables}),
            "allow_simultaneous": template["allow_simultaneous"], "job_template": template["id"] if sliced else None,
            "is_sliced_job": sliced, "inventory": prompts.get("inventory", template["inventory"]),
            "limit": chars["limit"], "scm_branch": chars["scm_branch"], "webhook_service": template["webhook_service"],
            "webhook_credential": template["webhook_credential"], "webhook_guid": "", "skip_tags": chars["skip_tags"],
            "job_tags": chars["job_tags"], "cancel_flag": False,
        }  # fmt: skip
        self.workflow_jobs[wid] = record
        return record

    def _sync_slices(self, workflow: dict[str, Any]) -> None:
        """The slice jobs of a sliced workflow job: spawned when it runs, ending when it ends (see the docstring)."""
        plan = self._slice_plans.get(workflow["id"])
        if plan is None:
            return
        status, spawned = workflow["status"], self._slices.get(workflow["id"])
        fresh = spawned is None
        if spawned is None:
            if status not in ("running", "successful", "failed"):
                return
            spawned = self._slices[workflow["id"]] = self._spawn_slices(workflow, *plan)
        for number, job_id in enumerate(spawned, start=1):
            job = self.jobs[job_id]
            ends = {"successful": "successful", "failed": "failed" if number == 1 else "successful", "error": "error",
                    "canceled": "canceled", "running": None if fresh else "running"}  # fmt: skip
            target = ends.get(status)
            if job["status"] in TERMINAL or target in (None, job["status"]):
                continue
            if target == "canceled" and not job["cancel_flag"]:  # dag.cancel_node_jobs → UnifiedJob.cancel
                job["cancel_flag"], job["canceled_on"] = True, job["canceled_on"] or stamp(self.clock())
            self._set_status(job, str(target))

    def _spawn_slices(self, workflow: dict[str, Any], template_id: int, user: str, variables: dict[str, Any],
                      prompts: dict[str, Any], count: int) -> list[int]:  # fmt: skip
        """WorkflowJobNode.get_job_kwargs for each slice node, then JobTemplate.create_unified_job(_prevent_slicing)."""
        spawned = []
        for number in range(1, count + 1):
            eager = {"job_slice_number": number, "job_slice_count": count, "allow_simultaneous": True}
            job = self._new_job(self.templates[template_id], user, variables, prompts | eager, launch_type="workflow")
            job["related"]["source_workflow_job"] = workflow["url"]
            self._slice_parent[job["id"]] = workflow["id"]
            spawned.append(job["id"])
        return spawned

    def _workflow_job_view(self, record: dict[str, Any], omit: tuple[str, ...]) -> dict[str, Any]:
        view = {k: copy.deepcopy(v) for k, v in record.items() if k not in omit and k not in _WF_HIDDEN}
        if record["status"] == "running" and record["started"]:
            view["elapsed"] = round((self.clock() - parse_dt(record["started"])).total_seconds(), 3)
        return view | copy.deepcopy(self._overlays.get(record["id"], {}))

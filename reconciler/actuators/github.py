"""Dispatch a GitHub Actions workflow and follow its run until it completes (GitHub REST: "Create a workflow
dispatch event", "Get a workflow run", "List workflow runs for a workflow", "Cancel a workflow run").

- The dispatch asks for the run's details (`return_run_details: true`): GitHub answers 200 with `workflow_run_id`,
  `run_url` and `html_url`, and the run's `html_url` is the action's link. An older GitHub Enterprise answers 204
  without them: the run is then looked for, as after a lost answer.
- Nothing can ride along in a dispatch to say which action it belongs to: GitHub refuses an input the workflow
  does not declare (422), and a run's inputs are not listed. So a dispatch whose answer was lost is looked for
  among the workflow's `workflow_dispatch` runs on its branch created since the action was planned, less those
  other actions recorded; only a single candidate is adopted. Two (someone dispatched it by hand meanwhile) cannot
  be told apart: neither is taken, and once the grace has passed the action is planned again.
- A run that outlives the server's `timeout` is cancelled (202: a request; the run completes as `cancelled`
  later), and followed until it has ended; `conclusion` `success` succeeded, anything else failed.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Set
from datetime import datetime, timedelta
from typing import Any

from reconciler import errors, model
from reconciler.actuators import boundary
from reconciler.actuators.github_client import GitHubClient, Server

__all__ = ["GitHubClient", "GithubActuator", "Server"]
log = logging.getLogger(__name__)
CLOCK_SKEW = timedelta(seconds=30)  # how far GitHub's clock may be behind ours when looking for a lost dispatch
MAX_POLL_DELAY = 15.0
CANCEL_GRACE = timedelta(minutes=2)  # how long a requested cancel may take before a later pass follows it
BLIND_LIMIT = timedelta(minutes=5)  # how long a run may be unreadable before a later pass follows it
_DISPATCH_URL = re.compile(r"/repos/([^/]+/[^/]+)/actions/workflows/(\d+)/dispatches$")


def run_ref(run_id: int) -> str:
    return f"run:{run_id}"


def _run_id(ref: str) -> int:
    kind, _, number = ref.partition(":")
    if kind != "run" or not number.isdigit():
        raise errors.GitHubError(f"{ref!r} is not a GitHub run reference")
    return int(number)


def recorded(spec: model.GithubAction, record: model.ActionRecord) -> tuple[str, str]:
    """The repository and ref an action was dispatched to, as its request recorded them (the configuration may have
    changed since), else as configured."""
    request = record.request or {}
    found = _DISPATCH_URL.search(str(request.get("url", "")))
    body = request.get("body")
    ref = body.get("ref") if isinstance(body, dict) else None
    return (found.group(1) if found else spec.repository), (ref if isinstance(ref, str) else spec.ref)


def branch_of(ref: str) -> str:
    """The run's `head_branch` for a dispatch on `ref`: a branch or tag name, without refs/heads/ or refs/tags/."""
    return ref.removeprefix("refs/heads/").removeprefix("refs/tags/")


def render_inputs(spec: model.GithubAction, target: model.Target) -> dict[str, str]:
    """The inputs with their placeholders filled; GitHub takes inputs as strings."""
    values = target.placeholders()
    rendered = {k: v.format_map(values) if isinstance(v, str) else v for k, v in spec.inputs.items()}
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in rendered.items()}


class GithubActuator:
    """Carries out `kind = "github"` actions over the `[github.NAME]` servers of the configuration."""

    def __init__(
        self,
        *,
        clients: Mapping[str, GitHubClient],
        clock: Callable[[], datetime],
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._clients = clients
        self._clock = clock
        self._sleep = sleep

    def _client(self, spec: model.GithubAction) -> GitHubClient:
        return self._clients[spec.server]

    @boundary.guard("fail", system="GitHub", error=errors.GitHubError)
    def request(self, spec: model.GithubAction, target: model.Target) -> dict[str, Any]:
        """The exact dispatch, resolving the workflow's id (read-only calls to GitHub only)."""
        client = self._client(spec)
        workflow_id = client.workflow_id(spec.repository, spec.workflow)
        return {
            "method": "POST",
            "url": client.url(f"repos/{spec.repository}/actions/workflows/{workflow_id}/dispatches"),
            "body": {"ref": spec.ref, "inputs": render_inputs(spec, target), "return_run_details": True},
        }

    def mark(self, spec: model.GithubAction, request: Mapping[str, Any], marker: str) -> dict[str, Any]:
        """Unchanged: GitHub refuses an input the workflow does not declare, so no marker can ride along."""
        return dict(request)

    @boundary.guard("unknown", system="GitHub", error=errors.GitHubError)
    def launch(
        self, spec: model.GithubAction, request: Mapping[str, Any], *, keep_alive: Callable[[], None] = lambda: None
    ) -> model.Launch:
        """POST the recorded dispatch once (never re-sent: its answer decides what happened)."""
        client = self._client(spec)
        what = f"dispatching {spec.workflow!r} of {spec.repository} on {spec.ref}"
        answer = client.dispatch(str(request["url"]), request["body"], what=what, repository=spec.repository)
        if answer is None:
            raise errors.LaunchOutcomeUnknown(
                f"GitHub {spec.server} took the dispatch without saying which run it started (204, an older GitHub "
                "Enterprise); looking for it",
                answered=True,
            )
        run_id = answer.get("workflow_run_id")
        if not isinstance(run_id, int) or isinstance(run_id, bool):
            raise errors.LaunchOutcomeUnknown(
                f"GitHub {spec.server} answered the dispatch without a run id", answered=True
            )
        link = answer.get("html_url")
        return model.Launch(ref=run_ref(run_id), link=link if isinstance(link, str) else None)

    @boundary.guard("fail", system="GitHub", error=errors.GitHubError)
    def find(
        self, spec: model.GithubAction, record: model.ActionRecord, *, exclude: Set[str] = frozenset()
    ) -> model.Launch | None:
        """The run a dispatch whose answer was lost (or not given) started: the workflow's only `workflow_dispatch`
        run on its branch created since the action was planned that no other action recorded; None when there is
        none, or more than one (they cannot be told apart)."""
        found = _DISPATCH_URL.search(str((record.request or {}).get("url", "")))
        if found is None:
            return None  # no dispatch was ever written for this record, so none was sent
        repository, workflow_id = found.group(1), int(found.group(2))
        since = record.planned_at - CLOCK_SKEW
        branch = branch_of(recorded(spec, record)[1])  # as dispatched: the configuration may have changed since
        runs = self._client(spec).runs(repository, workflow_id, since=since, branch=branch)
        candidates = [
            r
            for r in runs
            if r.get("event") == "workflow_dispatch"
            and isinstance(r.get("id"), int)
            and run_ref(r["id"]) not in exclude
        ]
        if len(candidates) != 1:
            if candidates:
                log.warning(
                    "watch %s: action #%d: %d runs of %s could be its dispatch (%s); adopting none",
                    record.watch,
                    record.id,
                    len(candidates),
                    spec.repository,
                    ", ".join(str(r["id"]) for r in candidates),
                )
            return None
        [run] = candidates
        link = run.get("html_url")
        return model.Launch(ref=run_ref(run["id"]), link=link if isinstance(link, str) else None)

    @boundary.guard("unfinished", system="GitHub", error=errors.GitHubError)
    def wait(
        self,
        spec: model.GithubAction,
        record: model.ActionRecord,
        *,
        keep_alive: Callable[[], None],
        progress: Callable[[str, str, datetime], None] = lambda *_: None,
    ) -> model.Finish | model.Unfinished:
        """Poll the run with back-off until it completes; past the server's `timeout` (from the dispatch) cancel
        it and follow it until the cancel took effect. A cancel that does not take effect within CANCEL_GRACE, or
        a run unreadable for BLIND_LIMIT, hands over to a later pass (the action stays open)."""
        client = self._client(spec)
        repository = recorded(spec, record)[0]
        run_id = _run_id(record.external_ref or "")
        started = record.launched_at or self._clock()
        deadline = started + client.server.timeout
        delay = max(client.server.poll.total_seconds(), 0.01)
        status, problem, link = "unknown", "", record.link or f"run {run_id}"
        read_at, cancel_since, cancelled = self._clock(), None, False
        while True:
            try:
                run = client.run(repository, run_id)
                status, read_at, fresh, problem = " ".join(str(run.get("status")).split())[:40], self._clock(), True, ""
            except errors.GitHubError as exc:  # a blip while waiting is not the run failing: keep polling
                limited = getattr(exc, "retry_after", None)
                if limited is not None and limited > MAX_POLL_DELAY:  # asking on would only anger GitHub
                    return model.Unfinished(f"{exc}; run {run_id} is followed again in a later pass ({link})")
                if str(exc) != problem:
                    log.info("watch %s: %s; polling again", record.watch, exc)
                run, fresh, problem = {}, False, str(exc)
            if fresh and status == "completed":
                return self._finish(run, run_id, link, cancelled=cancelled, timeout=client.server.timeout)
            now = self._clock()
            if now - read_at >= BLIND_LIMIT:
                return model.Unfinished(
                    f"run {run_id} could not be read for {int(BLIND_LIMIT.total_seconds())}s ({problem}); it is "
                    f"followed again in the next pass ({link})"
                )
            if now >= deadline and not cancelled:
                cancel_since = cancel_since or now
                try:
                    cancelled = True
                    if client.cancel(repository, run_id):
                        log.warning(
                            "watch %s: run %d ran past %s: cancel requested",
                            record.watch,
                            run_id,
                            client.server.timeout,
                        )
                    continue
                except errors.GitHubError as exc:
                    cancelled = False
                    log.warning("watch %s: could not cancel run %d yet: %s", record.watch, run_id, exc)
            if cancel_since is not None and now - cancel_since >= CANCEL_GRACE:
                return model.Unfinished(
                    f"run {run_id} is still {status} {int(CANCEL_GRACE.total_seconds())}s after cancelling it began; "
                    f"it is followed again in the next pass ({link})"
                )
            progress(f"GitHub run {run_id}", status if fresh else f"{status}, unreadable now", started)
            keep_alive()
            self._sleep(delay if now >= deadline else min(delay, (deadline - now).total_seconds()))
            delay = min(delay * 1.5, max(client.server.poll.total_seconds(), MAX_POLL_DELAY))

    @staticmethod
    def _finish(run: Mapping[str, Any], run_id: int, link: str, *, cancelled: bool, timeout: timedelta) -> model.Finish:
        conclusion = " ".join(str(run.get("conclusion")).split())[:40]
        if conclusion == "success":
            return model.Finish(True, f"run {run_id} succeeded")
        if cancelled and conclusion == "cancelled":
            return model.Finish(False, f"run {run_id} ran past the timeout of {timeout}; cancelled ({link})")
        return model.Finish(False, f"run {run_id} {conclusion} ({link})")

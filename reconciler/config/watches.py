"""`[[watch]]` tables: the schedule keys (inherited from `[reconciler]`), the selector, and the action with its
`extra_vars` placeholders. Each rejection names its key path."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from reconciler import errors, model
from reconciler.config import table as config_table
from reconciler.config.settings import PLACEHOLDERS, AwxSettings, GithubSettings

SCHEDULE_KEYS = ("interval", "jitter", "settle", "first_seen", "max_attempts")


@dataclass(frozen=True, slots=True)
class Defaults:
    interval: timedelta = timedelta(minutes=5)
    jitter: timedelta = timedelta(seconds=30)
    settle: timedelta = timedelta(0)
    first_seen: model.FirstSeen = model.FirstSeen.BASELINE
    max_attempts: int = 3


def schedule_of(table: config_table.Table, inherited: Defaults) -> Defaults:
    if not any(key in table.data for key in SCHEDULE_KEYS):  # the usual watch: all inherited, nothing to read
        return inherited
    interval = table.duration("interval", inherited.interval)
    if interval <= timedelta(0):
        raise errors.ConfigError(f"{table.key('interval')}: must be longer than 0s")
    return Defaults(
        interval=interval,
        jitter=table.duration("jitter", inherited.jitter),
        settle=table.duration("settle", inherited.settle),
        first_seen=table.choice("first_seen", model.FirstSeen, inherited.first_seen),
        max_attempts=table.integer("max_attempts", inherited.max_attempts, minimum=1),
    )


def _template(value: object, path: str) -> str | int:
    if value is None:
        raise errors.ConfigError(f"{path}: required, expected a job template name or a numeric id")
    if (
        isinstance(value, bool)
        or not isinstance(value, str | int)
        or value == ""
        or (isinstance(value, int) and value < 1)
    ):
        raise errors.ConfigError(f"{path}: expected a job template name or a numeric id >= 1, got {value!r}")
    return value


def _extra_vars(table: config_table.Table | None) -> dict[str, model.ExtraVar]:
    if table is None:
        return {}
    out: dict[str, model.ExtraVar] = {}
    for key, value in table.data.items():
        path = table.key(key)
        if not isinstance(value, str | int | float | bool):
            raise errors.ConfigError(f"{path}: expected a string, number or boolean, got {config_table.kind(value)}")
        if isinstance(value, str):
            try:
                fields = [f for _, f, _, _ in string.Formatter().parse(value) if f is not None]
            except ValueError as exc:
                raise errors.ConfigError(f"{path}: {exc} in {value!r} (write {{{{ for a literal brace)") from None
            for name in fields:
                if name not in PLACEHOLDERS:
                    allowed = ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                    raise errors.ConfigError(f"{path}: unknown placeholder {{{name}}} (known: {allowed})")
        out[key] = value
    return out


def _github(table: config_table.Table, github: Mapping[str, GithubSettings]) -> model.GithubAction:
    table.expect("kind", "github", "repository", "workflow", "ref", "inputs")
    server = table.required("github")
    if server not in github:
        known = ", ".join(f"[github.{n}]" for n in github) or "none"
        raise errors.ConfigError(f"{table.key('github')}: no [github.{server}] section (defined: {known})")
    workflow = table.get("workflow")
    if (
        isinstance(workflow, bool)
        or not isinstance(workflow, str | int)
        or workflow in ("", 0)
        or (isinstance(workflow, int) and workflow < 1)
    ):
        raise errors.ConfigError(
            f"{table.key('workflow')}: expected the workflow's name, its file name (build-main.yaml) or its numeric "
            f"id, got {workflow!r}"
        )
    inputs = _extra_vars(table.table("inputs"))
    if len(inputs) > 25:  # GitHub refuses more (REST: "Create a workflow dispatch event", inputs: max 25)
        raise errors.ConfigError(f"{table.key('inputs')}: GitHub takes at most 25 inputs, got {len(inputs)}")
    repository, ref = table.required("repository"), table.required("ref")
    try:
        return model.GithubAction(server=server, repository=repository, workflow=workflow, ref=ref, inputs=inputs)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{table.key('repository')}: {exc}") from None


def _action(
    table: config_table.Table, awx: Mapping[str, AwxSettings], github: Mapping[str, GithubSettings]
) -> model.Action:
    kind = table.required("kind")
    if kind == model.ActionKind.AWX:
        table.expect("kind", "awx", "template", "workflow_template", "extra_vars")
        server = table.required("awx")
        if server not in awx:
            known = ", ".join(f"[awx.{n}]" for n in awx) or "none"
            raise errors.ConfigError(f"{table.key('awx')}: no [awx.{server}] section (defined: {known})")
        if table.has("template") and table.has("workflow_template"):
            raise errors.ConfigError(f"{table.key('workflow_template')}: give template or workflow_template, not both")
        key = "workflow_template" if table.has("workflow_template") else "template"
        action: model.Action = model.AwxAction(
            server=server,
            template=_template(table.get(key), table.key(key)),
            extra_vars=_extra_vars(table.table("extra_vars")),
            workflow=key == "workflow_template",
        )
    elif kind == model.ActionKind.STATEFULSET:
        table.expect("kind", "namespace", "name", "container", "mode", "timeout", "on_delete")
        action = model.StatefulSetAction(
            namespace=table.required("namespace"),
            name=table.required("name"),
            container=table.required("container"),
            mode=table.choice("mode", model.RolloutMode, model.RolloutMode.RESTART),
            timeout=table.duration("timeout", timedelta(minutes=15)),
            on_delete=table.choice("on_delete", model.OnDelete, model.OnDelete.REPORT),
        )
    elif kind == model.ActionKind.GITHUB:
        action = _github(table, github)
    else:
        raise errors.ConfigError(f'{table.key("kind")}: expected "awx", "github" or "statefulset", got {kind!r}')
    return action


def _selector(table: config_table.Table) -> model.Selector:
    if table.has("tag") == table.has("tags"):
        raise errors.ConfigError(f'{table.path}: give exactly one of tag = "latest" or tags = "release"')
    if table.has("tag"):
        tag = table.required("tag")
        try:
            return model.TagSelector(tag)
        except errors.ConfigError as exc:
            raise errors.ConfigError(f"{table.key('tag')}: {exc}") from None
    tags = table.get("tags")
    if tags == "release":
        return model.ReleaseSelector()
    if not isinstance(tags, dict):
        raise errors.ConfigError(f'{table.key("tags")}: expected "release" or a table {{pattern, range}}, got {tags!r}')
    rule = config_table.Table(tags, table.key("tags"), table.env, table.base).expect("pattern", "range")
    pattern = rule.text("pattern", model.RELEASE_PATTERN)
    assert pattern is not None
    version_range = rule.text("range")
    try:
        return model.ReleaseSelector(pattern=pattern, range=version_range)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{rule.path}: {exc}") from None


def watch(
    table: config_table.Table,
    defaults: Defaults,
    awx: Mapping[str, AwxSettings],
    github: Mapping[str, GithubSettings] | None = None,
) -> model.Watch:
    table.expect("name", "image", "tag", "tags", "action", "environment", "approve", *SCHEDULE_KEYS)
    name = table.required("name")
    environment = table.text("environment", "")  # what notifications call it; by default the name's last "-" part
    approve = table.flag("approve", False)  # a person says yes (`reconciler approve`) before each new digest acts
    image_text = table.required("image")
    try:
        image = model.ImageRef.parse(image_text)
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{table.key('image')}: {exc}") from None
    selector = _selector(table)
    timing = schedule_of(table, defaults)
    action_table = table.table("action")
    action = _action(action_table, awx, github or {}) if action_table is not None else None
    missing: tuple[config_table.MissingSecret, ...] = ()
    if isinstance(action, model.AwxAction):
        missing = awx[action.server].missing
    elif isinstance(action, model.GithubAction):
        missing = (github or {})[action.server].missing
    try:
        return model.Watch(
            name=name,
            image=image,
            selector=selector,
            interval=timing.interval,
            jitter=timing.jitter,
            settle=timing.settle,
            first_seen=timing.first_seen,
            max_attempts=timing.max_attempts,
            action=action,
            cannot_act="; ".join(str(m) for m in missing) or None,
            environment=environment or "",
            approve=approve,
        )
    except errors.ConfigError as exc:
        raise errors.ConfigError(f"{table.path}: {exc}") from None

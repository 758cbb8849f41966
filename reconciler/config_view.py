"""`config check`'s document: the configuration as resolved, every secret shown only by where it comes from."""

from __future__ import annotations

from typing import Any

from reconciler import config, model
from reconciler.store import urls


def resolved(settings: config.Settings) -> dict[str, Any]:
    def secret(value: config.Secret | None) -> str | None:
        return None if value is None else f"<redacted, from {value.source}>"

    def watch(w: model.Watch) -> dict[str, Any]:
        action: dict[str, Any] | None = None
        if isinstance(w.action, model.AwxAction):
            action = {
                "kind": "awx",
                "awx": w.action.server,
                "workflow_template" if w.action.workflow else "template": w.action.template,
                "extra_vars": dict(w.action.extra_vars),
            }
        elif isinstance(w.action, model.GithubAction):
            action = {
                "kind": "github",
                "github": w.action.server,
                "repository": w.action.repository,
                "workflow": w.action.workflow,
                "ref": w.action.ref,
                "inputs": dict(w.action.inputs),
            }
        elif isinstance(w.action, model.StatefulSetAction):
            action = {
                "kind": "statefulset",
                "namespace": w.action.namespace,
                "name": w.action.name,
                "container": w.action.container,
                "mode": w.action.mode.value,
                "on_delete": w.action.on_delete.value,
                "timeout": config.duration_text(w.action.timeout),
            }
        return {
            "name": w.name,
            "image": str(w.image),
            "selector": w.selector.describe(),
            "interval": config.duration_text(w.interval),
            "jitter": config.duration_text(w.jitter),
            "settle": config.duration_text(w.settle),
            "first_seen": w.first_seen.value,
            "max_attempts": w.max_attempts,
            "environment": w.environment,
            "approve": w.approve,
            "action": action,
        }

    def notify(n: config.NotifySettings) -> dict[str, Any]:
        # A plain webhook URL is shown as it is; an Apprise URL (and a webhook URL from a secret) only by its source;
        # one that is missing (listed in "missing") as null, like any other secret.
        url: str | None = None
        if n.url is not None:
            plain = n.kind is model.NotifyKind.WEBHOOK and n.shown == n.url.reveal()
            url = n.shown if plain else f"<redacted, from {n.shown}>"
        return {
            "name": n.name,
            "kind": n.kind.value,
            "url": url,
            "secret": secret(n.secret),
            "events": sorted(e.value for e in n.route.events),
            "watches": sorted(n.route.watches) if n.route.watches is not None else None,
            "timeout": config.duration_text(n.timeout),
            "missing": [str(m) for m in n.missing],
        }

    return {
        "source": settings.source,
        "database": urls.hidden(settings.database),
        "instance": settings.instance,
        "keep": config.duration_text(settings.keep),
        "server": {
            "listen": settings.server.listen,
            "token": secret(settings.server.token),
            "webhook_secret": secret(settings.server.webhook_secret),
        },
        "registries": {
            host: {"url": r.url, "username": secret(r.username), "password": secret(r.password)}
            for host, r in settings.registries.items()
        },
        "awx": {
            name: {
                "url": a.url,
                "token": secret(a.token),
                "username": secret(a.username),
                "password": secret(a.password),
                "timeout": config.duration_text(a.timeout),
                "poll": config.duration_text(a.poll),
                "marker": a.marker,
            }
            for name, a in settings.awx.items()
        },
        "github": {
            name: {
                "url": g.url,
                "token": secret(g.token),
                "timeout": config.duration_text(g.timeout),
                "poll": config.duration_text(g.poll),
            }
            for name, g in settings.github.items()
        },
        "kubernetes": {"context": settings.kube_context, "poll": config.duration_text(settings.kube_poll)},
        "watch": [watch(w) for w in settings.watches],
        "notify": [notify(n) for n in settings.notify],
    }

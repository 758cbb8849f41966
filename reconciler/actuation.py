"""The actuators a configuration needs, for the composition root (`app`), built over the clients `clients` builds:
AWX always; GitHub when a `[github.NAME]` is configured; Kubernetes (its client imported only then) when a watch
rolls a StatefulSet. A server whose secret is not set gets no client: its watches do not act (`Watch.cannot_act`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

import requests

from reconciler import clients, config, deploy, model
from reconciler.actuators import awx, github

if TYPE_CHECKING:
    from kubernetes import client as k8s


def actuators(
    settings: config.Settings,
    *,
    awx_session: Callable[[], requests.Session],
    kube_api: Callable[[], k8s.ApiClient],
    github_session: Callable[[], requests.Session],
    clock: Callable[[], datetime],
    sleep: Callable[[float], object],
) -> dict[model.ActionKind, deploy.Actuator]:
    servers = {
        name: awx.AwxClient(session=awx_session(), server=clients.awx_server(name, s))
        for name, s in settings.awx.items()
        if not s.missing
    }
    built: dict[model.ActionKind, deploy.Actuator] = {
        model.ActionKind.AWX: awx.AwxActuator(clients=servers, clock=clock, sleep=sleep)
    }
    if settings.github:
        session = github_session()
        hubs = {
            name: github.GitHubClient(session=session, server=clients.github_server(name, s), sleep=sleep, clock=clock)
            for name, s in settings.github.items()
            if not s.missing
        }
        built[model.ActionKind.GITHUB] = github.GithubActuator(clients=hubs, clock=clock, sleep=sleep)
    if any(isinstance(w.action, model.StatefulSetAction) for w in settings.watches):
        from reconciler.actuators import kube  # noqa: PLC0415  (~0.5 s: only for the configurations that need it)

        built[model.ActionKind.STATEFULSET] = kube.StatefulSetActuator(
            api=kube_api(), clock=clock, sleep=sleep, poll=settings.kube_poll.total_seconds()
        )
    return built

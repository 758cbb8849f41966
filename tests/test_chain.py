"""The seed's whole chain, end to end on the real registry: a new frontend image dispatches the stack's `build main`
(the fake GitHub), whose run, when it completes, pushes a new `fragalysis-stack:latest`; the stack watch then
launches the AWX staging job (the fake AWX) for that digest. Exactly one build, exactly one deployment; the order
follows by itself. Time is a fake clock: every wait (polls, the build) passes instantly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reconciler import app, config, model
from tests.fakes.awx import FakeAwx
from tests.fakes.github import FakeGitHub
from tests.support.awx_scenario import STAGING, TOKEN, FakeTime
from tests.support.registry import LocalRegistry, push_schema2

GITHUB_TOKEN = "ghp_chain_token_31c4"
STACK_REPOSITORY = "xchem/fragalysis-stack"
CONFIG = """
[reconciler]
database = "sqlite:///{tmp}/reconciler.db"

[registries."docker.io"]
url = "{registry}"

[awx.production]
url = "{awx}"
token_env = "AWX_TOKEN"
poll = "5s"

[github.default]
url = "{github}"
token_env = "GITHUB_TOKEN"
poll = "15s"

[[watch]]
name = "stack-staging"
image = "{images}/fragalysis-stack"
tag = "latest"
[watch.action]
kind = "awx"
awx = "production"
template = "Staging Fragalysis Stack"
extra_vars = {{ stack_image_tag = "{{tag}}" }}

[[watch]]
name = "frontend"
image = "{images}/fragalysis-frontend"
tag = "latest"
[watch.action]
kind = "github"
github = "default"
repository = "xchem/fragalysis-stack"
workflow = "build main"
ref = "master"
inputs = {{ fe_image_tag = "{{tag}}" }}
"""


@dataclass
class Chain:
    registry: LocalRegistry
    awx: FakeAwx
    github: FakeGitHub
    time: FakeTime
    path: Path
    images: str
    built: list[str]

    def reconcile(self) -> dict[str, model.WatchOutcome]:
        settings = config.load(self.path, env={"AWX_TOKEN": TOKEN, "GITHUB_TOKEN": GITHUB_TOKEN})
        application = app.App(settings)
        try:
            report = application.reconcile([], dry_run=False, clock=self.time, sleep=self.time.sleep)
        finally:
            application.close()
        return {o.watch.name: o for o in report.outcomes}

    def push(self, image: str, label: str) -> str:
        return push_schema2(self.registry.base, f"{self.images}/{image}", "latest", label=label)


@pytest.fixture
def chain(tmp_path: Path, registry: LocalRegistry, awx: FakeAwx) -> Iterator[Chain]:
    time = FakeTime()
    awx.clock = time
    images = f"chain/{tmp_path.name.lower().replace('_', '-')}"[:50]
    with FakeGitHub(GITHUB_TOKEN, clock=time) as github:
        github.add_repository(STACK_REPOSITORY)
        github.add_workflow(STACK_REPOSITORY, name="build main")
        github.script("success", polls=3)  # the build takes a few polls
        built: list[str] = []

        def build(run: dict[str, Any]) -> None:  # what the stack's `build main` does: push a new stack image
            built.append(push_schema2(registry.base, f"{images}/fragalysis-stack", "latest", label=f"run-{run['id']}"))

        github.on_complete(build)
        path = tmp_path / "config.toml"
        path.write_text(
            CONFIG.format(tmp=tmp_path, registry=registry.base, awx=awx.base, github=github.base, images=images)
        )
        yield Chain(registry, awx, github, time, path, images, built)


def test_a_new_frontend_builds_the_stack_once_and_deploys_the_new_stack_once(chain: Chain) -> None:
    chain.push("fragalysis-stack", "stack-one")
    chain.push("fragalysis-frontend", "frontend-one")
    first = chain.reconcile()
    assert {o.decision.verdict for o in first.values()} == {model.Verdict.BASELINE}

    chain.push("fragalysis-frontend", "frontend-two")
    built = chain.reconcile()
    assert built["frontend"].action is not None and built["frontend"].action.status is model.ActionStatus.SUCCEEDED
    [dispatch] = chain.github.dispatches
    assert dispatch.inputs == {"fe_image_tag": "latest"} and dispatch.ref == "master"
    [new_stack] = chain.built  # the build pushed it when its run completed
    assert chain.awx.launches == []

    deployed = chain.reconcile()
    action = deployed["stack-staging"].action
    assert action is not None and action.status is model.ActionStatus.SUCCEEDED and action.digest == new_stack
    [(template, extra_vars)] = chain.awx.launches
    assert chain.awx.templates[template]["name"] == STAGING and extra_vars["stack_image_tag"] == "latest"

    settled = chain.reconcile()
    assert {o.decision.verdict for o in settled.values()} == {model.Verdict.IN_SYNC}
    assert len(chain.github.dispatches) == 1 and len(chain.awx.launches) == 1

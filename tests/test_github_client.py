"""The GitHub client against the fake GitHub over real HTTP: the workflow looked up by name across pages, GitHub's
refusals in one sentence naming what to do, rate limits waited out on reads, and the token never in a message."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import requests

from reconciler import errors
from reconciler.actuators.github_client import GitHubClient, Server
from tests.fakes.github import FakeGitHub
from tests.support.awx_scenario import FakeTime

TOKEN = "ghp_client_token_77aa"
STACK = "xchem/fragalysis-stack"


@pytest.fixture
def time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def github(time: FakeTime) -> Iterator[FakeGitHub]:
    with FakeGitHub(TOKEN, clock=time) as fake:
        fake.add_repository(STACK)
        yield fake


def client(github: FakeGitHub, time: FakeTime, token: str = TOKEN, *, enterprise: bool = False) -> GitHubClient:
    url = github.base + ("/api/v3" if enterprise else "")
    server = Server(
        name="default",
        url=url,
        authorization=f"Bearer {token}",
        timeout=timedelta(minutes=45),
        poll=timedelta(seconds=5),
    )
    return GitHubClient(session=requests.Session(), server=server, sleep=time.sleep, clock=time)


@pytest.mark.parametrize("enterprise", [False, True])
def test_a_workflow_is_found_by_its_exact_name_on_a_later_page(
    github: FakeGitHub, time: FakeTime, enterprise: bool
) -> None:
    for n in range(130):
        github.add_workflow(STACK, name=f"job {n}", path=f".github/workflows/job-{n}.yaml")
    wanted = github.add_workflow(STACK, name="build main")
    assert client(github, time, enterprise=enterprise).workflow_id(STACK, "build main") == wanted
    assert github.count("GET", None) >= 2  # more than one page was read


def test_a_missing_workflow_names_the_closest_and_cannot_be_retried(github: FakeGitHub, time: FakeTime) -> None:
    github.add_workflow(STACK, name="build main")
    with pytest.raises(errors.GitHubRefused, match="no workflow named 'buld main'; closest: 'build main'"):
        client(github, time).workflow_id(STACK, "buld main")


def test_a_bad_token_is_named_without_showing_it(github: FakeGitHub, time: FakeTime) -> None:
    github.add_workflow(STACK, name="build main")
    with pytest.raises(errors.GitHubError) as caught:
        client(github, time, token="ghp_wrong_wrong").workflow_id(STACK, "build main")
    assert "refused the token" in str(caught.value) and "401" in str(caught.value)
    assert "ghp_wrong_wrong" not in str(caught.value)


def test_an_unknown_repository_says_it_may_be_invisible_to_the_token(github: FakeGitHub, time: FakeTime) -> None:
    with pytest.raises(errors.GitHubError, match="found no xchem/nothing-here .*the token cannot see it"):
        client(github, time).workflow_id("xchem/nothing-here", "build main")


def test_a_rate_limited_read_waits_as_asked_then_asks_again(github: FakeGitHub, time: FakeTime) -> None:
    github.add_workflow(STACK, name="build main")
    github.rate_limit_next("workflows", secondary=True, wait=20)
    before = time.now
    client(github, time).workflow_id(STACK, "build main")
    assert (time.now - before).total_seconds() >= 20


def test_a_primary_rate_limit_on_a_read_waits_until_the_reset(github: FakeGitHub, time: FakeTime) -> None:
    github.add_workflow(STACK, name="build main")
    github.rate_limit_next("workflows", wait=30)  # x-ratelimit-remaining 0, reset 30 s ahead; no retry-after
    before = time.now
    client(github, time).workflow_id(STACK, "build main")
    assert github.count("GET", None) == 2 and (time.now - before).total_seconds() >= 30


def test_a_403_names_the_permission_the_token_lacks(github: FakeGitHub, time: FakeTime) -> None:
    github.add_workflow(STACK, name="build main")
    github.fail_next(1, 403, "workflows", body={"message": "Resource not accessible by personal access token"})
    with pytest.raises(errors.GitHubError, match="token needs actions:write on xchem/fragalysis-stack") as caught:
        client(github, time).workflow_id(STACK, "build main")
    assert "Resource not accessible by personal access token" in str(caught.value)


def test_a_lost_dispatch_is_looked_for_on_the_ref_it_was_sent_to_not_the_configured_one(
    github: FakeGitHub, time: FakeTime
) -> None:
    """The configuration may change while an action is open: its run is where its recorded request went."""
    from reconciler import model
    from reconciler.actuators.github import GithubActuator

    github.add_repository("xchem/other", branches=("master", "develop"))
    workflow = github.add_workflow(STACK, name="build main")
    run = github.dispatch_by_hand(STACK, workflow, "master", actor="reconciler-bot")
    request = {"url": f"{github.base}/repos/{STACK}/actions/workflows/{workflow}/dispatches", "body": {"ref": "master"}}
    record = model.ActionRecord(
        id=1,
        watch="frontend",
        kind=model.ActionKind.GITHUB,
        status=model.ActionStatus.PLANNED,
        tag="latest",
        digest="sha256:" + "a" * 64,
        attempt=1,
        created_at=time.now,
        request=request,
    )
    now = model.GithubAction(server="default", repository="xchem/other", workflow="build main", ref="develop")
    actuator = GithubActuator(clients={"default": client(github, time)}, clock=time, sleep=time.sleep)
    found = actuator.find(now, record)
    assert found is not None and found.ref == f"run:{run}"

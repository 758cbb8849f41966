"""The GitHub fake itself answers like GitHub's Actions REST API does, over real HTTP with plain `requests`."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from tests.fakes.github import FakeGitHub

TOKEN = "ghp_fake_token"
REPO = "xchem/fragalysis-stack"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
INPUTS = {"fe_image_tag": "2026.11.1", "be_image_tag": "latest"}


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gh(clock: Clock) -> Iterator[FakeGitHub]:
    with FakeGitHub(TOKEN, clock=clock) as fake:
        fake.add_repository(REPO)
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers.update({"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.github+json"})
        yield session


def _url(gh: FakeGitHub, path: str) -> str:
    return f"{gh.base}/repos/{REPO}/actions/{path}"


def _dispatch(gh: FakeGitHub, http: requests.Session, wf: int | str, **body: Any) -> requests.Response:
    body = {"ref": "master", "inputs": INPUTS, "return_run_details": True} | body
    return http.post(_url(gh, f"workflows/{wf}/dispatches"), json=body, timeout=5)


def _run(gh: FakeGitHub, http: requests.Session, run_id: int) -> dict[str, Any]:
    resp = http.get(_url(gh, f"runs/{run_id}"), timeout=5)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _error(resp: requests.Response, status: int, message: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["message"] == message and body["status"] == str(status), body
    assert body["documentation_url"].startswith("https://docs.github.com/rest")


def test_workflows_list_pages_with_link_by_repository_id(gh: FakeGitHub, http: requests.Session) -> None:
    ids = [gh.add_workflow(REPO, name=f"wf {i:02}", path=f".github/workflows/wf{i:02}.yaml") for i in range(35)]
    first = http.get(_url(gh, "workflows"), timeout=5)
    body, rid = first.json(), gh.repository_id(REPO)
    assert body["total_count"] == 35 and [w["id"] for w in body["workflows"]] == ids[:30]
    item = body["workflows"][0]
    assert set(item) == {"id", "node_id", "name", "path", "state", "created_at", "updated_at", "url", "html_url",
                         "badge_url"}  # fmt: skip
    assert item["state"] == "active" and item["url"] == f"{gh.base}/repos/{REPO}/actions/workflows/{ids[0]}"
    base = f"{gh.base}/repositories/{rid}/actions/workflows"
    assert first.headers["Link"] == f'<{base}?page=2>; rel="next", <{base}?page=2>; rel="last"'
    second = http.get(f"{base}?page=2", timeout=5)
    assert [w["id"] for w in second.json()["workflows"]] == ids[30:]
    assert second.headers["Link"] == f'<{base}?page=1>; rel="prev", <{base}?page=1>; rel="first"'
    assert len(http.get(_url(gh, "workflows"), params={"per_page": "500"}, timeout=5).json()["workflows"]) == 35
    small = http.get(_url(gh, "workflows"), params={"per_page": "10", "page": "2"}, timeout=5)
    assert small.headers["Link"].split(", ")[1] == f'<{base}?per_page=10&page=3>; rel="next"'


def test_get_workflow_by_id_or_file_name(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    assert http.get(_url(gh, f"workflows/{wid}"), timeout=5).json()["name"] == "build main"
    assert http.get(_url(gh, "workflows/build-main.yaml"), timeout=5).json()["id"] == wid
    _error(http.get(_url(gh, "workflows/nope.yaml"), timeout=5), 404, "Not Found")
    _error(http.get(f"{gh.base}/repos/xchem/other/actions/workflows", timeout=5), 404, "Not Found")
    assert http.get(f"{gh.base}/repos/XChem/Fragalysis-Stack/actions/workflows", timeout=5).status_code == 200
    _error(http.get(_url(gh, "workflows/"), timeout=5), 404, "Not Found")  # a trailing slash
    _error(http.delete(_url(gh, f"workflows/{wid}"), timeout=5), 404, "Not Found")  # a method it lacks


def test_authentication_schemes_and_401_bodies(gh: FakeGitHub) -> None:
    url = _url(gh, "workflows")
    for header in (f"Bearer {TOKEN}", f"token {TOKEN}", "Basic " + base64.b64encode(f"bot:{TOKEN}".encode()).decode()):
        assert requests.get(url, headers={"Authorization": header}, timeout=5).status_code == 200
    _error(requests.get(url, timeout=5), 401, "Requires authentication")
    for header in ("Bearer wrong", f"Bearer {TOKEN}x", "Basic !!"):
        bad = requests.get(url, headers={"Authorization": header}, timeout=5)
        _error(bad, 401, "Bad credentials")
        assert bad.json()["documentation_url"] == "https://docs.github.com/rest"


def test_dispatch_with_run_details_creates_a_queued_run(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    resp = _dispatch(gh, http, wid)
    assert resp.status_code == 200, resp.text
    rid = resp.json()["workflow_run_id"]
    run_url, html_url = f"{gh.base}/repos/{REPO}/actions/runs/{rid}", f"https://github.com/{REPO}/actions/runs/{rid}"
    assert rid > 2**32 and resp.json() == {"workflow_run_id": rid, "run_url": run_url, "html_url": html_url}
    assert gh.dispatches == [(REPO, wid, "master", INPUTS, rid)]
    run = gh.runs[rid]
    assert (run["status"], run["conclusion"], run["event"], run["head_branch"]) == ("queued", None, "workflow_dispatch",
                                                                                    "master")  # fmt: skip
    assert run["actor"]["login"] == "reconciler-bot" and run["created_at"] == "2026-11-26T09:00:00Z"
    assert (run["workflow_id"], run["run_number"], run["name"], run["display_title"]) == (wid, 1, "build main",
                                                                                          "build main")  # fmt: skip
    assert "inputs" not in run
    assert _dispatch(gh, http, "build-main.yaml").status_code == 200
    assert gh.runs[gh.dispatches[1].run_id]["run_number"] == 2


def test_dispatch_without_details_and_on_an_old_enterprise_is_204(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    plain = _dispatch(gh, http, wid, return_run_details=False)
    assert plain.status_code == 204 and plain.content == b"" and "Content-Length" not in plain.headers
    gh.old_enterprise(True)
    old = _dispatch(gh, http, wid)
    assert old.status_code == 204 and old.content == b""
    assert len(gh.runs) == 2 and [d.run_id for d in gh.dispatches] == sorted(gh.runs)


def test_dispatch_refusals_create_nothing(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    push_only = gh.add_workflow(REPO, name="push", path=".github/workflows/push.yaml", dispatchable=False)
    _error(_dispatch(gh, http, push_only), 422, "Workflow does not have 'workflow_dispatch' trigger")
    _error(_dispatch(gh, http, wid, inputs={"x": "1", "fe_image_tag": "a", "y": "2"}), 422,
           'Unexpected inputs provided: ["x", "y"]')  # fmt: skip
    _error(_dispatch(gh, http, wid, ref="main"), 422, "No ref found for: main")
    _error(_dispatch(gh, http, wid, ref="refs/heads/v1"), 422, "No ref found for: refs/heads/v1")
    too_many = _dispatch(gh, http, wid, inputs={f"i{n}": "v" for n in range(26)})
    assert too_many.status_code == 422 and "25" in too_many.json()["message"]
    assert _dispatch(gh, http, 999).status_code == 404
    missing = http.post(_url(gh, f"workflows/{wid}/dispatches"), json={"inputs": {}}, timeout=5)
    _error(missing, 422, 'Invalid request.\n\n"ref" wasn\'t supplied.')
    broken = http.post(_url(gh, f"workflows/{wid}/dispatches"), data=b'{"ref": ', timeout=5)
    _error(broken, 400, "Problems parsing JSON")
    assert gh.runs == {} and gh.dispatches == []


def test_refs_by_name_full_name_and_tag(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.add_tag(REPO, "2026.11.1")
    for ref, head in [("master", "master"), ("refs/heads/master", "master"), ("2026.11.1", "2026.11.1"),
                      ("refs/tags/2026.11.1", "2026.11.1")]:  # fmt: skip
        resp = _dispatch(gh, http, wid, ref=ref)
        assert resp.status_code == 200 and gh.runs[resp.json()["workflow_run_id"]]["head_branch"] == head


def test_scripted_progression_calls_on_complete_once(gh: FakeGitHub, http: requests.Session) -> None:
    seen: list[dict[str, Any]] = []
    wid = gh.add_workflow(REPO)
    gh.on_complete(seen.append)
    gh.script("failure", polls=2, count=1)
    first, second = (_dispatch(gh, http, wid).json()["workflow_run_id"] for _ in range(2))
    states = [(r["status"], r["conclusion"]) for r in (_run(gh, http, first) for _ in range(4))]
    assert states == [("queued", None), ("in_progress", None), ("completed", "failure"), ("completed", "failure")]
    assert [(r["id"], r["conclusion"]) for r in seen] == [(first, "failure")]
    assert [_run(gh, http, second)["status"] for _ in range(3)] == ["queued", "in_progress", "completed"]
    assert gh.runs[second]["conclusion"] == "success" and len(seen) == 2 and gh.callback_errors == []


def test_runs_list_newest_first_without_inputs_and_filtered(gh: FakeGitHub, http: requests.Session,
                                                            clock: Clock) -> None:  # fmt: skip
    wid = gh.add_workflow(REPO, branches=("master", "staging"))
    mine = _dispatch(gh, http, wid).json()["workflow_run_id"]
    clock.tick(60)
    theirs = gh.dispatch_by_hand(REPO, wid, "staging", INPUTS)
    listed = http.get(_url(gh, f"workflows/{wid}/runs"), params={"event": "workflow_dispatch"}, timeout=5).json()
    assert listed["total_count"] == 2 and [r["id"] for r in listed["workflow_runs"]] == [theirs, mine]
    assert all("inputs" not in r for r in listed["workflow_runs"])
    assert listed["workflow_runs"][0]["url"] == f"{gh.base}/repos/{REPO}/actions/runs/{theirs}"
    for params, expected in [({"actor": "reconciler-bot"}, [mine]), ({"branch": "staging"}, [theirs]),
                             ({"event": "push"}, []), ({"status": "queued"}, [theirs, mine])]:  # fmt: skip
        got = http.get(_url(gh, "runs"), params=params, timeout=5).json()["workflow_runs"]
        assert [r["id"] for r in got] == expected, params


def test_created_qualifiers(gh: FakeGitHub, http: requests.Session, clock: Clock) -> None:
    wid = gh.add_workflow(REPO)
    early = _dispatch(gh, http, wid).json()["workflow_run_id"]  # 09:00:00
    clock.tick(90)
    late = _dispatch(gh, http, wid).json()["workflow_run_id"]  # 09:01:30
    url = _url(gh, f"workflows/{wid}/runs")
    for created, expected in [(">=2026-11-26T09:00:00Z", [late, early]), (">2026-11-26T09:00:00Z", [late]),
                              ("<2026-11-26T09:01:30Z", [early]), ("<=2026-11-26T09:01:30Z", [late, early]),
                              ("2026-11-26T08:00:00Z..2026-11-26T09:00:59Z", [early]), ("2026-11-26", [late, early]),
                              (">2026-11-26", []), ("2026-11-26T09:01:00Z..*", [late])]:  # fmt: skip
        got = http.get(url, params={"created": created}, timeout=5).json()["workflow_runs"]
        assert [r["id"] for r in got] == expected, created
    assert http.get(url, params={"created": "yesterday"}, timeout=5).status_code == 422


def test_runs_list_pages(gh: FakeGitHub, http: requests.Session, clock: Clock) -> None:
    wid = gh.add_workflow(REPO)
    for _ in range(5):
        _dispatch(gh, http, wid)
        clock.tick(1)
    resp = http.get(_url(gh, f"workflows/{wid}/runs"), params={"per_page": "2", "branch": "master"}, timeout=5)
    assert resp.json()["total_count"] == 5 and len(resp.json()["workflow_runs"]) == 2
    rid = gh.repository_id(REPO)
    assert (
        f"<{gh.base}/repositories/{rid}/actions/workflows/{wid}/runs?per_page=2&branch=master&page=3>"
        in (resp.headers["Link"])
    )
    assert http.get(_url(gh, "runs"), params={"per_page": "2", "page": "9"}, timeout=5).json()["workflow_runs"] == []


def test_cancel_is_a_request_and_a_completed_run_refuses(gh: FakeGitHub, http: requests.Session) -> None:
    seen: list[dict[str, Any]] = []
    wid = gh.add_workflow(REPO)
    gh.on_complete(seen.append)
    rid = _dispatch(gh, http, wid).json()["workflow_run_id"]
    _run(gh, http, rid)
    cancel = http.post(_url(gh, f"runs/{rid}/cancel"), timeout=5)
    assert cancel.status_code == 202 and cancel.json() == {}
    assert _run(gh, http, rid)["status"] == "queued"  # cancel_delay = 1: not yet
    assert (_run(gh, http, rid)["status"], gh.runs[rid]["conclusion"]) == ("completed", "cancelled")
    assert [r["conclusion"] for r in seen] == ["cancelled"]
    _error(http.post(_url(gh, f"runs/{rid}/cancel"), timeout=5), 409, "Cannot cancel a workflow run that is completed.")
    _error(http.post(_url(gh, "runs/123/cancel"), timeout=5), 404, "Not Found")
    gh.cancel_delay = 0
    other = _dispatch(gh, http, wid).json()["workflow_run_id"]
    assert http.post(_url(gh, f"runs/{other}/cancel"), timeout=5).status_code == 202
    assert _run(gh, http, other)["conclusion"] == "cancelled"


def test_lost_answer_after_create_still_creates_the_run(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.hang_next("dispatch", after_create=True)
    with pytest.raises(requests.ReadTimeout):  # the client gives up; GitHub has created the run all the same
        _dispatch_with_timeout(gh, wid, 0.3)
    assert gh.wait_hanging(timeout=5)
    assert len(gh.runs) == 1 and gh.dispatches[0].run_id in gh.runs
    gh.release()
    listed = http.get(_url(gh, f"workflows/{wid}/runs"), params={"actor": "reconciler-bot"}, timeout=5).json()
    assert [r["id"] for r in listed["workflow_runs"]] == list(gh.runs)


def _dispatch_with_timeout(gh: FakeGitHub, wid: int, timeout: float) -> requests.Response:
    body = {"ref": "master", "inputs": INPUTS, "return_run_details": True}
    headers = {"Authorization": f"Bearer {TOKEN}"}
    return requests.post(_url(gh, f"workflows/{wid}/dispatches"), json=body, headers=headers, timeout=timeout)


def test_a_hang_before_processing_creates_nothing_until_released(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.hang_next("dispatch")
    answers: list[requests.Response] = []
    thread = threading.Thread(target=lambda: answers.append(_dispatch_with_timeout(gh, wid, 10)))
    thread.start()
    assert gh.wait_hanging(timeout=5)
    assert gh.runs == {}
    gh.release()
    thread.join(timeout=5)
    assert answers[0].status_code == 200 and len(gh.runs) == 1


def test_fail_next_bodies_and_a_gateway_error_that_still_creates(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.fail_next(1, 500, "workflows")
    assert http.get(_url(gh, "workflows"), timeout=5).json() == {"message": "Server Error"}
    gh.fail_next(1, 504, "dispatch", creates=True)
    late = _dispatch(gh, http, wid)
    assert late.status_code == 504 and late.json()["message"].startswith("We couldn't respond to your request in time")
    assert len(gh.runs) == 1
    gh.fail_next(1, 502, "any", body="<html>Unicorn!</html>", headers={"x-extra": "1"})
    odd = http.get(_url(gh, "runs"), timeout=5)
    assert (odd.status_code, odd.text, odd.headers["x-extra"]) == (502, "<html>Unicorn!</html>", "1")
    gh.fail_next(1, 403, "dispatch", body={"message": "Resource not accessible by integration"})
    assert _dispatch(gh, http, wid).status_code == 403 and len(gh.runs) == 1


def test_every_answer_carries_rate_limit_and_request_headers(gh: FakeGitHub, http: requests.Session,
                                                             clock: Clock) -> None:  # fmt: skip
    first = http.get(_url(gh, "runs"), timeout=5)
    second = http.get(_url(gh, "runs"), headers={"X-GitHub-Api-Version": "2026-03-10"}, timeout=5)
    reset = int(T0.timestamp()) + 3600
    assert [(r.headers["x-ratelimit-remaining"], r.headers["x-ratelimit-used"]) for r in (first, second)] == [
        ("4999", "1"), ("4998", "2")]  # fmt: skip
    assert first.headers["x-ratelimit-limit"] == "5000" and first.headers["x-ratelimit-reset"] == str(reset)
    assert first.headers["x-github-request-id"] != second.headers["x-github-request-id"]
    assert first.headers["x-github-api-version-selected"] == "2022-11-28"
    assert second.headers["x-github-api-version-selected"] == "2026-03-10"
    clock.tick(3600)
    third = http.get(_url(gh, "runs"), timeout=5)
    assert third.headers["x-ratelimit-used"] == "1" and third.headers["x-ratelimit-reset"] == str(reset + 3600)
    unknown = http.get(_url(gh, "runs"), headers={"X-GitHub-Api-Version": "v3"}, timeout=5)
    assert unknown.status_code == 400 and '"v3", is not a supported version' in unknown.json()["message"]
    gh.api_versions = ("2022-11-28",)  # an older GHES
    assert http.get(_url(gh, "runs"), headers={"X-GitHub-Api-Version": "2026-03-10"}, timeout=5).status_code == 400


def test_primary_and_secondary_rate_limits(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.rate_limit_next("dispatch", wait=7)
    primary = _dispatch(gh, http, wid)
    _error(primary, 403, "API rate limit exceeded for user ID 48151623.")
    assert primary.headers["x-ratelimit-remaining"] == "0"
    assert primary.headers["x-ratelimit-reset"] == str(int(T0.timestamp()) + 7) and gh.runs == {}
    gh.rate_limit_next("run", secondary=True, status=429, wait=30)
    gh.rate_limit_next("any", secondary=True, wait=-1)
    secondary = http.get(_url(gh, "runs/1"), timeout=5)
    _error(secondary, 429, "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.")
    assert secondary.headers["retry-after"] == "30" and secondary.headers["x-ratelimit-remaining"] != "0"
    bare = http.get(_url(gh, "workflows"), timeout=5)
    assert bare.status_code == 403 and "retry-after" not in bare.headers
    assert _dispatch(gh, http, wid).status_code == 200


def test_the_hourly_limit_runs_out_until_reset(gh: FakeGitHub, http: requests.Session, clock: Clock) -> None:
    gh.rate_limit = 2
    assert [http.get(_url(gh, "runs"), timeout=5).status_code for _ in range(3)] == [200, 200, 403]
    clock.tick(3599)
    assert http.get(_url(gh, "runs"), timeout=5).headers["x-ratelimit-remaining"] == "0"
    clock.tick(1)
    assert http.get(_url(gh, "runs"), timeout=5).status_code == 200


def test_enterprise_prefix_routes_the_same(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    api = f"{gh.base}/api/v3"
    resp = http.post(f"{api}/repos/{REPO}/actions/workflows/{wid}/dispatches", json={"ref": "master",
                     "return_run_details": True}, timeout=5)  # fmt: skip
    rid = resp.json()["workflow_run_id"]
    assert resp.json()["run_url"] == f"{api}/repos/{REPO}/actions/runs/{rid}"
    run = http.get(resp.json()["run_url"], timeout=5).json()
    assert run["url"] == f"{api}/repos/{REPO}/actions/runs/{rid}" and run["repository"]["url"] == f"{api}/repos/{REPO}"
    assert gh.requests[-1].path == f"/api/v3/repos/{REPO}/actions/runs/{rid}"


def test_set_run_and_runs_by_hand(gh: FakeGitHub, http: requests.Session) -> None:
    seen: list[dict[str, Any]] = []
    wid = gh.add_workflow(REPO)
    gh.on_complete(seen.append)
    by_hand = gh.dispatch_by_hand(REPO, wid, "master", INPUTS, actor="someone")
    assert gh.dispatches == [] and gh.runs[by_hand]["actor"]["login"] == "someone"
    gh.set_run(by_hand, "waiting")
    assert [_run(gh, http, by_hand)["status"] for _ in range(3)] == ["waiting"] * 3
    gh.set_run(by_hand, conclusion="timed_out")
    assert gh.runs[by_hand]["status"] == "completed" and [r["conclusion"] for r in seen] == ["timed_out"]
    with pytest.raises(ValueError, match="Unexpected inputs"):
        gh.dispatch_by_hand(REPO, wid, "master", {"nope": "1"})
    with pytest.raises(ValueError):
        gh.set_run(by_hand, "completed")


def test_a_new_run_lags_behind_in_lists(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.list_lag = 2
    rid = _dispatch(gh, http, wid).json()["workflow_run_id"]
    counts = [http.get(_url(gh, "runs"), timeout=5).json()["total_count"] for _ in range(3)]
    assert counts == [0, 0, 1] and _run(gh, http, rid)["id"] == rid


def test_a_failing_callback_is_recorded_and_the_answer_still_goes_out(gh: FakeGitHub, http: requests.Session) -> None:
    wid = gh.add_workflow(REPO)
    gh.script(polls=0)

    def boom(run: dict[str, Any]) -> None:
        raise RuntimeError(f"push failed for {run['id']}")

    gh.on_complete(boom)
    rid = _dispatch(gh, http, wid).json()["workflow_run_id"]
    assert _run(gh, http, rid)["conclusion"] == "success"
    assert [str(e) for e in gh.callback_errors] == [f"push failed for {rid}"]
    assert [(r.method, r.path.rsplit("/", 1)[-1]) for r in gh.requests] == [("POST", "dispatches"), ("GET", str(rid))]
    assert gh.count("POST") == 1 and gh.requests[0].headers["authorization"] == f"Bearer {TOKEN}"

"""The AWX fake itself answers like AWX 24.x does, over real HTTP with plain `requests`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urljoin

import pytest
import requests

from tests.fakes.awx import AUTHENTICATE, BAD_PASSWORD, NOT_PROVIDED, FakeAwx

TOKEN = "awx-test-token"
STAGING = "Staging Fragalysis Stack"
T0 = datetime(2026, 8, 20, 12, 0, tzinfo=UTC)


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
def awx(clock: Clock) -> Iterator[FakeAwx]:
    with FakeAwx(users={"alice": "s3cret"}) as fake:
        fake.clock = clock
        yield fake


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {TOKEN}"
        yield session


def _launch(awx: FakeAwx, http: requests.Session, tid: int, extra_vars: Any = None, **kw: Any) -> requests.Response:
    body = {} if extra_vars is None else {"extra_vars": extra_vars}
    return http.post(f"{awx.base}/api/v2/job_templates/{tid}/launch/", json=body | kw, timeout=5)


def _job(awx: FakeAwx, http: requests.Session, job_id: int) -> dict[str, Any]:
    resp = http.get(f"{awx.base}/api/v2/jobs/{job_id}/", timeout=5)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def test_template_lookup_by_exact_name(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    awx.add_template(STAGING + " (Version Change)")
    awx.add_template(STAGING.lower())
    url = f"{awx.base}/api/v2/job_templates/"
    found = http.get(url, params={"name": STAGING}, timeout=5)
    assert found.status_code == 200
    page = found.json()
    assert (page["count"], page["next"], page["previous"]) == (1, None, None)
    item = page["results"][0]
    assert tid == 7 and item["id"] == tid and item["type"] == "job_template" and item["name"] == STAGING
    assert item["url"] == f"/api/v2/job_templates/{tid}/"
    assert item["related"]["launch"] == f"/api/v2/job_templates/{tid}/launch/"
    assert item["related"]["jobs"] == f"/api/v2/job_templates/{tid}/jobs/"
    assert item["summary_fields"]["organization"] == {"id": 1, "name": "Default", "description": ""}
    assert item["extra_vars"] == "---\nstack_image: xchem/fragalysis-stack\nstack_image_tag: latest"
    assert item["ask_variables_on_launch"] is True and item["status"] == "never updated"
    assert http.get(url, params={"name": "Nope"}, timeout=5).json() == {
        "count": 0,
        "next": None,
        "previous": None,
        "results": [],
    }
    other = awx.add_template(STAGING, organization="Diamond")  # names are unique per organization only
    twice = http.get(url, params={"name": STAGING}, timeout=5).json()
    assert twice["count"] == 2 and [r["id"] for r in twice["results"]] == [tid, other]
    assert twice["results"][1]["summary_fields"]["organization"]["name"] == "Diamond"
    detail = http.get(f"{url}{tid}/", timeout=5)
    assert detail.json()["name"] == STAGING and detail.headers["X-API-Product-Version"] == "24.6.1"
    missing = http.get(f"{url}999/", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}


def test_pagination_links_are_relative_and_sorted(awx: FakeAwx, http: requests.Session) -> None:
    for i in range(30):
        awx.add_template(f"t{i:02}")
    url = f"{awx.base}/api/v2/job_templates/"
    first = http.get(url, params={"page_size": "25"}, timeout=5).json()
    assert first["count"] == 30 and len(first["results"]) == 25 and first["previous"] is None
    assert first["next"] == "/api/v2/job_templates/?page=2&page_size=25"
    second = http.get(urljoin(url, first["next"]), timeout=5).json()
    assert [r["name"] for r in second["results"]] == [f"t{i}" for i in range(25, 30)]
    assert second["next"] is None and second["previous"] == "/api/v2/job_templates/?page=1&page_size=25"
    plain = http.get(url, params={"order_by": "-id"}, timeout=5).json()
    assert plain["next"] == "/api/v2/job_templates/?order_by=-id&page=2" and plain["results"][0]["name"] == "t29"
    assert len(http.get(url, params={"page_size": "500"}, timeout=5).json()["results"]) == 30  # capped at 200
    assert len(http.get(url, params={"page_size": "0"}, timeout=5).json()["results"]) == 25  # bad → default
    assert http.get(url, params={"page": "last", "page_size": "25"}, timeout=5).json()["results"][0]["name"] == "t25"
    assert http.get(url, params={"count_disabled": "1"}, timeout=5).json().keys() == {"results"}
    assert http.get(url, params={"status": "never updated"}, timeout=5).json()["count"] == 30
    for page in ("3", "0", "x"):
        invalid = http.get(url, params={"page": page}, timeout=5)
        assert invalid.status_code == 404 and invalid.json() == {"detail": "Invalid page."}


def test_missing_trailing_slash_is_a_301_and_a_post_becomes_a_get(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    moved = http.get(f"{awx.base}/api/v2/job_templates?name=a+b", allow_redirects=False, timeout=5)
    assert moved.status_code == 301 and moved.headers["Location"] == "/api/v2/job_templates/?name=a+b"
    anonymous = requests.get(f"{awx.base}/api/v2/jobs/1", allow_redirects=False, timeout=5)
    assert anonymous.status_code == 301  # the redirect comes before authentication
    resp = http.post(f"{awx.base}/api/v2/job_templates/{tid}/launch", json={"extra_vars": {"a": 1}}, timeout=5)
    assert [r.status_code for r in resp.history] == [301] and resp.status_code == 200
    assert resp.request.method == "GET" and "can_start_without_user_input" in resp.json()
    assert awx.jobs == {} and awx.launches == []
    assert [(r.method, r.path) for r in awx.requests[-2:]] == [
        ("POST", f"/api/v2/job_templates/{tid}/launch"),
        ("GET", f"/api/v2/job_templates/{tid}/launch/"),
    ]
    assert awx.count("POST") == 1 and awx.count("GET", "/api/v2/job_templates/") == 1


def test_401_bodies_and_challenge() -> None:
    with FakeAwx(users={"alice": "s3cret"}) as awx, requests.Session() as http:
        url = f"{awx.base}/api/v2/job_templates/"
        cases = [
            ({}, NOT_PROVIDED),
            ({"Authorization": "Bearer wrong"}, NOT_PROVIDED),
            ({"Authorization": "Token awx-test-token"}, NOT_PROVIDED),
        ]
        for headers, detail in cases:
            resp = http.get(url, headers=headers, timeout=5)
            assert resp.status_code == 401 and resp.json() == {"detail": detail}
            assert resp.headers["WWW-Authenticate"] == AUTHENTICATE
            assert "X-API-Product-Version" not in resp.headers and resp.headers["X-API-Product-Name"] == "AWX"
        bad = http.get(url, auth=("alice", "nope"), timeout=5)
        assert bad.status_code == 401 and bad.json() == {"detail": BAD_PASSWORD}
        assert bad.json()["detail"].endswith(" To establish a login session, visit /api/login/.")
        assert http.get(url, auth=("alice", "s3cret"), timeout=5).status_code == 200
        assert http.get(url, headers={"Authorization": "Bearer awx-test-token"}, timeout=5).status_code == 200
        unknown = http.post(url, headers={"Authorization": "Bearer awx-test-token"}, json={}, timeout=5)
        assert unknown.status_code == 405 and unknown.json() == {"detail": 'Method "POST" not allowed.'}
    with FakeAwx(token=None) as tokenless:
        resp = requests.get(f"{tokenless.base}/api/v2/jobs/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert resp.status_code == 401 and resp.json() == {"detail": NOT_PROVIDED}
        basic = requests.get(f"{tokenless.base}/api/v2/jobs/", auth=("admin", "password"), timeout=5)
        assert basic.status_code == 401 and basic.json() == {"detail": BAD_PASSWORD}


def test_launch_creates_a_pending_job(awx: FakeAwx, http: requests.Session, clock: Clock) -> None:
    tid = awx.add_template(STAGING, extra_vars="---\nstack_image: xchem/fragalysis-stack\nstack_is_for_developer: no")
    info = http.get(f"{awx.base}/api/v2/job_templates/{tid}/launch/", timeout=5).json()
    assert info["can_start_without_user_input"] is False  # any ask_* flag makes it false (AWX jobs.py)
    assert info["ask_variables_on_launch"] is True and info["job_template_data"]["id"] == tid
    assert info["variables_needed_to_start"] == [] and info["passwords_needed_to_start"] == []
    resp = _launch(awx, http, tid, {"stack_image_tag": "2026.08.3"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"] == f"{awx.base}/api/v2/jobs/4242/"
    body = resp.json()
    assert list(body)[:2] == ["job", "ignored_fields"]
    assert body["job"] == body["id"] == 4242 and body["ignored_fields"] == {} and body["type"] == "job"
    assert (body["status"], body["failed"], body["started"], body["finished"]) == ("pending", False, None, None)
    assert body["url"] == "/api/v2/jobs/4242/" and body["job_template"] == tid and body["launch_type"] == "manual"
    assert body["created"] == "2026-08-20T12:00:00.000000Z" and body["name"] == STAGING
    assert json.loads(body["extra_vars"]) == {
        "stack_image": "xchem/fragalysis-stack",
        "stack_is_for_developer": False,
        "stack_image_tag": "2026.08.3",
    }
    assert awx.launches == [(tid, {"stack_image_tag": "2026.08.3"})] and set(awx.jobs) == {4242}
    as_json = _launch(awx, http, tid, '{"stack_image_tag": "2026.08.4"}')
    as_yaml = _launch(awx, http, tid, "---\nstack_image_tag: 2026.08.5\n")
    assert [as_json.json()["id"], as_yaml.json()["id"]] == [4243, 4244]
    assert json.loads(as_yaml.json()["extra_vars"])["stack_image_tag"] == "2026.08.5"
    assert _launch(awx, http, tid).status_code == 201  # no body fields at all is fine
    template = http.get(f"{awx.base}/api/v2/job_templates/{tid}/", timeout=5).json()
    assert template["status"] == "pending"


@pytest.mark.parametrize("extra_vars", ["{not json", "[1, 2]", "just a string", 42, ["a"]])
def test_unparsable_extra_vars_are_a_400(awx: FakeAwx, http: requests.Session, extra_vars: Any) -> None:
    resp = _launch(awx, http, awx.add_template(STAGING), extra_vars)
    assert resp.status_code == 400
    assert list(resp.json()) == ["extra_vars"]
    (message,) = resp.json()["extra_vars"]
    assert message.startswith("Cannot parse as JSON (error: ") and ") or YAML (error: " in message
    assert awx.jobs == {} and awx.launches == []


def test_bad_launch_requests(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    url = f"{awx.base}/api/v2/job_templates/{tid}/launch/"
    not_json = http.post(url, data=b"{", headers={"Content-Type": "application/json"}, timeout=5)
    assert not_json.status_code == 400 and not_json.json()["detail"].startswith("JSON parse error - ")
    a_list = http.post(url, json=[1], timeout=5)
    assert a_list.status_code == 400 and "__all__" in a_list.json()
    unknown = http.post(f"{awx.base}/api/v2/job_templates/999/launch/", json={}, timeout=5)
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Not found."}
    assert awx.jobs == {}


def test_unprompted_variables_are_ignored_but_still_201(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING, ask_variables_on_launch=False)
    info = http.get(f"{awx.base}/api/v2/job_templates/{tid}/launch/", timeout=5).json()
    assert info["can_start_without_user_input"] is True
    sent = {"stack_image": "xchem/fragalysis-stack", "stack_image_tag": "2026.08.3"}
    resp = _launch(awx, http, tid, sent, limit="stack-0")
    assert resp.status_code == 201
    body = resp.json()
    # the variable equal to the saved value is pruned, the other is dropped and reported; so is the un-prompted limit
    assert body["ignored_fields"] == {"extra_vars": {"stack_image_tag": "2026.08.3"}, "limit": "stack-0"}
    assert json.loads(body["extra_vars"]) == {"stack_image": "xchem/fragalysis-stack", "stack_image_tag": "latest"}
    assert body["limit"] == "" and awx.launches == [(tid, sent)]
    same = _launch(awx, http, tid, {"stack_image_tag": "latest"}).json()
    assert same["ignored_fields"] == {}
    prompted = awx.add_template("Limited", ask_limit_on_launch=True)
    assert _launch(awx, http, prompted, limit="stack-0").json()["limit"] == "stack-0"


def test_status_progression_follows_the_script(awx: FakeAwx, http: requests.Session, clock: Clock) -> None:
    tid = awx.add_template(STAGING)
    job_id = _launch(awx, http, tid, {"stack_image_tag": "x"}).json()["id"]
    seen = []
    for _ in range(4):
        clock.tick(10)
        seen.append(_job(awx, http, job_id))
    assert [j["status"] for j in seen] == ["pending", "running", "successful", "successful"]
    assert seen[0]["started"] is None and seen[0]["elapsed"] == 0.0
    assert seen[1]["started"] == "2026-08-20T12:00:20.000000Z" and seen[1]["finished"] is None
    assert seen[2]["finished"] == "2026-08-20T12:00:30.000000Z" and seen[2]["elapsed"] == 10.0
    assert [j["failed"] for j in seen] == [False] * 4
    assert [j["event_processing_finished"] for j in seen] == [False, False, False, True]
    assert isinstance(seen[3]["elapsed"], float) and seen[3]["job_explanation"] == ""
    assert seen[3]["result_traceback"] == "" and json.loads(seen[3]["extra_vars"])["stack_image_tag"] == "x"
    clock.tick(5)
    running = _launch(awx, http, tid).json()["id"]
    awx.set_job_status(running, "running")
    clock.tick(7.5)
    assert _job(awx, http, running)["elapsed"] == 7.5  # computed live while running
    assert awx.jobs[running]["elapsed"] == 0.0  # ... and stored only when finished

    awx.script("failed", polls=0, count=1)
    awx.script("error", polls=1, count=1)
    failed, errored, default = (_launch(awx, http, tid).json()["id"] for _ in range(3))
    assert (_job(awx, http, failed)["status"], _job(awx, http, failed)["failed"]) == ("failed", True)
    assert _job(awx, http, errored)["status"] == "pending"
    error = _job(awx, http, errored)
    assert (error["status"], error["failed"], error["started"]) == ("error", True, None)  # never ran
    assert error["job_explanation"].startswith("Previous Task Failed: ")
    assert [_job(awx, http, default)["status"] for _ in range(3)] == ["pending", "running", "successful"]
    awx.script("canceled", polls=1)  # the new default
    later = [_launch(awx, http, tid).json()["id"] for _ in range(2)]
    assert [[_job(awx, http, j)["status"] for _ in range(2)] for j in later] == [["pending", "canceled"]] * 2

    stuck = _launch(awx, http, tid).json()["id"]
    awx.set_job_status(stuck, "running")
    assert [_job(awx, http, stuck)["status"] for _ in range(5)] == ["running"] * 5
    awx.set_job_status(stuck, "failed")
    assert _job(awx, http, stuck)["failed"] is True and awx.jobs[stuck]["status"] == "failed"
    summary = http.get(f"{awx.base}/api/v2/job_templates/{tid}/", timeout=5).json()
    assert summary["status"] == "failed" and summary["last_job_failed"] is True
    with pytest.raises(ValueError, match="not an AWX job status"):
        awx.set_job_status(stuck, "done")


def test_jobs_list_filters_orders_and_refuses_extra_vars_search(
    awx: FakeAwx, http: requests.Session, clock: Clock
) -> None:
    staging, production = awx.add_template(STAGING), awx.add_template("Production Fragalysis Stack")
    ids = []
    for i, tid in enumerate([staging, production, staging, staging]):
        ids.append(_launch(awx, http, tid, {"stack_image_tag": f"v{i}"}).json()["id"])
        clock.tick(60)
    awx.set_job_status(ids[2], "successful")
    url = f"{awx.base}/api/v2/jobs/"
    since = (T0 + timedelta(seconds=30)).isoformat()
    params = {"job_template": str(staging), "created__gte": since, "order_by": "-created", "page_size": "20"}
    listed = http.get(url, params=params, timeout=5)
    assert listed.status_code == 200
    page = listed.json()
    assert page["count"] == 2 and [j["id"] for j in page["results"]] == [ids[3], ids[2]]
    item = page["results"][0]
    for absent in ("job_args", "job_cwd", "job_env", "result_traceback", "event_processing_finished"):
        assert absent not in item
    assert json.loads(item["extra_vars"]) == {
        "stack_image": "xchem/fragalysis-stack",
        "stack_image_tag": "v3",
    }  # extra_vars IS in list items, to compare on the client
    active = http.get(
        url, params={"job_template": str(staging), "status__in": "new,pending,waiting,running"}, timeout=5
    )
    assert [j["id"] for j in active.json()["results"]] == [ids[0], ids[3]]
    sub = http.get(f"{awx.base}/api/v2/job_templates/{production}/jobs/", timeout=5).json()
    assert [j["id"] for j in sub["results"]] == [ids[1]]
    not_done = http.get(url, params={"not__status": "successful", "finished__isnull": "true"}, timeout=5).json()
    assert not_done["count"] == 3
    for key in ("extra_vars__contains", "extra_vars__icontains", "extra_vars", "not__job_env__contains", "job_args"):
        refused = http.get(url, params={"job_template": str(staging), key: "v3"}, timeout=5)
        field = key.removeprefix("not__").split("__")[0]
        assert refused.status_code == 403 and refused.json() == {"detail": f"Filtering on {field} is not allowed."}
    bad_date = http.get(url, params={"created__gte": "yesterday"}, timeout=5)
    assert bad_date.status_code == 400 and "invalid format" in bad_date.json()["detail"]
    unquoted_plus = http.get(f"{url}?created__gte=2026-08-20T12:00:30+00:00", timeout=5)  # '+' decodes as a space
    assert unquoted_plus.status_code == 400
    assert http.get(url, params={"job_template": "x"}, timeout=5).status_code == 400
    assert http.get(url, params={"or__status": "failed"}, timeout=5).status_code == 400  # not modelled: loud


def test_fail_next(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    awx.fail_next(2, status=503, path_kind="launch")
    assert [_launch(awx, http, tid).status_code for _ in range(2)] == [503, 503]
    assert http.get(f"{awx.base}/api/v2/job_templates/", timeout=5).status_code == 200  # other kinds unaffected
    assert _launch(awx, http, tid).status_code == 201 and list(awx.jobs) == [4242]
    awx.fail_next(1, status=502, path_kind="job", body={"detail": "bad gateway"})
    failed = http.get(f"{awx.base}/api/v2/jobs/4242/", timeout=5)
    assert failed.status_code == 502 and failed.json() == {"detail": "bad gateway"}
    awx.fail_next(1, path_kind="any")
    assert http.get(f"{awx.base}/api/v2/jobs/", timeout=5).status_code == 500
    assert http.get(f"{awx.base}/api/v2/jobs/", timeout=5).status_code == 200


def test_hang_after_create_keeps_the_job_but_not_the_answer(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    awx.hang_next("launch", after_create=True)
    with pytest.raises(requests.exceptions.ReadTimeout):
        _post_with_timeout(awx, http, tid, 0.3)
    assert awx.wait_hanging(1, timeout=5)
    assert list(awx.jobs) == [4242] and awx.launches == [(tid, {"stack_image_tag": "hung"})]
    awx.release()
    assert _launch(awx, http, tid).json()["id"] == 4243  # answered normally again

    awx.hang_next("launch")  # before processing: nothing happens until released
    with pytest.raises(requests.exceptions.ReadTimeout):
        _post_with_timeout(awx, http, tid, 0.3)
    assert awx.wait_hanging(1, timeout=5) and list(awx.jobs) == [4242, 4243]
    awx.release()
    assert not awx.wait_hanging(1, timeout=0.2)


def test_stop_releases_a_hung_request() -> None:
    with FakeAwx() as awx, requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {TOKEN}"
        awx.hang_next("job")
        with pytest.raises(requests.exceptions.ReadTimeout):
            http.get(f"{awx.base}/api/v2/jobs/1/", timeout=0.3)
        assert awx.wait_hanging()
    assert awx.ui_link(4242) == f"{awx.base}/#/jobs/playbook/4242"


def _post_with_timeout(awx: FakeAwx, http: requests.Session, tid: int, timeout: float) -> requests.Response:
    url = f"{awx.base}/api/v2/job_templates/{tid}/launch/"
    return http.post(url, json={"extra_vars": {"stack_image_tag": "hung"}}, timeout=timeout)


def _workflow_launch(
    awx: FakeAwx, http: requests.Session, tid: int, extra_vars: Any = None, **kw: Any
) -> requests.Response:
    body = {} if extra_vars is None else {"extra_vars": extra_vars}
    return http.post(f"{awx.base}/api/v2/workflow_job_templates/{tid}/launch/", json=body | kw, timeout=5)


def _workflow_job(awx: FakeAwx, http: requests.Session, job_id: int) -> dict[str, Any]:
    resp = http.get(f"{awx.base}/api/v2/workflow_jobs/{job_id}/", timeout=5)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


NGINX_504 = (
    b"<html>\r\n<head><title>504 Gateway Time-out</title></head>\r\n<body>\r\n"
    b"<center><h1>504 Gateway Time-out</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def test_cancel_of_a_running_job_is_a_request_that_takes_effect_later(
    awx: FakeAwx, http: requests.Session, clock: Clock
) -> None:
    job_id = _launch(awx, http, awx.add_template(STAGING)).json()["id"]
    assert [_job(awx, http, job_id)["status"] for _ in range(2)] == ["pending", "running"]
    cancel = f"{awx.base}/api/v2/jobs/{job_id}/cancel/"
    assert http.get(cancel, timeout=5).json() == {"can_cancel": True}
    clock.tick(5)
    asked = http.post(cancel, timeout=5)
    assert asked.status_code == 202 and asked.content == b"" and "Content-Type" not in asked.headers
    assert awx.jobs[job_id]["cancel_flag"] is True
    still = _job(awx, http, job_id)  # cancel_delay 1: one more GET shows it running
    assert (still["status"], still["finished"]) == ("running", None) and "cancel_flag" not in still
    assert still["canceled_on"] == "2026-08-20T12:00:05.000000Z"  # UnifiedJob.save: at the request
    assert http.post(cancel, timeout=5).status_code == 202  # can_cancel still true: asked again, nothing new
    flagged = http.get(f"{awx.base}/api/v2/jobs/", params={"cancel_flag": "true"}, timeout=5).json()
    assert [j["id"] for j in flagged["results"]] == [job_id]  # a model field: filterable though never shown
    clock.tick(5)
    done = _job(awx, http, job_id)
    assert (done["status"], done["failed"], done["finished"]) == ("canceled", True, "2026-08-20T12:00:10.000000Z")
    assert done["canceled_on"] == "2026-08-20T12:00:05.000000Z" and done["job_explanation"] == ""
    late = http.post(cancel, timeout=5)
    assert late.status_code == 405 and late.json() == {"detail": 'Method "POST" not allowed.'}
    assert http.get(cancel, timeout=5).json() == {"can_cancel": False}
    missing = http.post(f"{awx.base}/api/v2/jobs/999/cancel/", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}


def test_cancel_of_a_job_not_yet_dispatched_takes_effect_in_the_request(awx: FakeAwx, http: requests.Session) -> None:
    job_id = _launch(awx, http, awx.add_template(STAGING)).json()["id"]  # pending: no celery_task_id yet
    assert http.post(f"{awx.base}/api/v2/jobs/{job_id}/cancel/", timeout=5).status_code == 202
    assert awx.jobs[job_id]["status"] == "canceled"
    job = _job(awx, http, job_id)
    assert (job["status"], job["started"], job["elapsed"]) == ("canceled", None, 0.0)


def test_cancel_delay_counts_gets_and_none_waits_for_the_test(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    slow, never, at_once = (_launch(awx, http, tid).json()["id"] for _ in range(3))
    for job_id, delay in ((slow, 3), (never, None), (at_once, 0)):
        awx.set_job_status(job_id, "running")
        awx.cancel_delay = delay
        assert http.post(f"{awx.base}/api/v2/jobs/{job_id}/cancel/", timeout=5).status_code == 202
    assert [_job(awx, http, slow)["status"] for _ in range(4)] == ["running"] * 3 + ["canceled"]
    assert [_job(awx, http, never)["status"] for _ in range(5)] == ["running"] * 5
    awx.set_job_status(never, "canceled")
    assert _job(awx, http, never)["status"] == "canceled"
    assert _job(awx, http, at_once)["status"] == "canceled"  # 0: a dispatcher that did not answer


def test_gateway_timeout_on_launch_still_creates_the_job(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    awx.gateway_error_next()
    resp = _launch(awx, http, tid, {"stack_image_tag": "2026.08.3"})
    assert resp.status_code == 504 and resp.content == NGINX_504
    assert resp.headers["Content-Type"] == "text/html" and "X-API-Product-Version" not in resp.headers
    assert list(awx.jobs) == [4242] and awx.launches == [(tid, {"stack_image_tag": "2026.08.3"})]
    listed = http.get(f"{awx.base}/api/v2/jobs/", params={"job_template": str(tid)}, timeout=5).json()
    assert [j["id"] for j in listed["results"]] == [4242]
    assert _launch(awx, http, tid).status_code == 201  # one answer only


def test_gateway_error_whose_launch_commits_later(awx: FakeAwx, http: requests.Session, clock: Clock) -> None:
    tid = awx.add_template(STAGING)
    awx.gateway_error_next(502, after_requests=2)
    bad = _launch(awx, http, tid)
    assert bad.status_code == 502 and b"<title>502 Bad Gateway</title>" in bad.content and awx.jobs == {}
    url = f"{awx.base}/api/v2/jobs/"
    clock.tick(3)
    assert http.get(url, timeout=5).json()["count"] == 0
    clock.tick(4)
    assert http.get(f"{awx.base}/api/v2/job_templates/", timeout=5).status_code == 200  # any path counts
    clock.tick(60)
    (job,) = http.get(url, timeout=5).json()["results"]
    assert job["created"] == "2026-08-20T12:00:07.000000Z" and job["status"] == "pending"
    assert awx.launches == [(tid, {})]
    awx.gateway_error_next(503, creates=False)
    assert _launch(awx, http, tid).status_code == 503 and len(awx.jobs) == 1  # nothing reached AWX
    for _ in range(3):
        http.get(url, timeout=5)
    assert len(awx.jobs) == 1


def test_awx_own_500_is_json_and_creates_nothing(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    awx.fail_next(1, 500, "launch")
    resp = _launch(awx, http, tid)
    assert resp.status_code == 500 and resp.json() == {"detail": "A server error has occurred."}
    assert resp.headers["Content-Type"] == "application/json" and awx.jobs == {} and awx.launches == []
    awx.fail_next(1, 504, "launch")
    proxy = _launch(awx, http, tid)
    assert proxy.status_code == 504 and proxy.content == NGINX_504 and awx.jobs == {}
    awx.fail_next(1, 200, "templates", body="")
    assert http.get(f"{awx.base}/api/v2/job_templates/", timeout=5).content == b""


def test_fault_path_kinds_cover_the_new_routes(awx: FakeAwx, http: requests.Session) -> None:
    wid = awx.add_workflow_template("Deploy")
    workflow_job = _workflow_launch(awx, http, wid).json()["workflow_job"]
    job = _launch(awx, http, awx.add_template(STAGING)).json()["job"]
    cases = [
        ("workflow_templates", "get", f"/api/v2/workflow_job_templates/{wid}/"),
        ("workflow_launch", "post", f"/api/v2/workflow_job_templates/{wid}/launch/"),
        ("workflow_jobs", "get", f"/api/v2/workflow_job_templates/{wid}/workflow_jobs/"),
        ("workflow_jobs", "get", "/api/v2/workflow_jobs/"),
        ("workflow_job", "get", f"/api/v2/workflow_jobs/{workflow_job}/"),
        ("workflow_job", "post", f"/api/v2/workflow_jobs/{workflow_job}/cancel/"),
        ("workflow_cancel", "get", f"/api/v2/workflow_jobs/{workflow_job}/cancel/"),
        ("cancel", "get", f"/api/v2/jobs/{job}/cancel/"),
    ]
    for kind, method, path in cases:
        awx.fail_next(1, 418, kind)  # type: ignore[arg-type]
        assert http.request(method, f"{awx.base}{path}", timeout=5).status_code == 418, (kind, path)
    awx.fail_next(1, 418, "cancel")
    assert _job(awx, http, job)["status"] == "pending"  # the job detail is not a cancel path
    assert http.get(f"{awx.base}/api/v2/jobs/{job}/cancel/", timeout=5).status_code == 418
    with pytest.raises(ValueError, match="bad fault"):
        awx.fail_next(1, 500, "workflows")  # type: ignore[arg-type]


def test_workflow_template_lookup_by_exact_name(awx: FakeAwx, http: requests.Session) -> None:
    jt = awx.add_template(STAGING)
    wid = awx.add_workflow_template("Deploy Stack", extra_vars="---\nstack_namespace: staging-stack")
    awx.add_workflow_template("Deploy Stack (old)")
    url = f"{awx.base}/api/v2/workflow_job_templates/"
    page = http.get(url, params={"name": "Deploy Stack"}, timeout=5).json()
    assert (page["count"], page["next"]) == (1, None)
    item = page["results"][0]
    assert (jt, wid) == (7, 8)  # one id sequence for both kinds of template (UnifiedJobTemplate)
    assert (
        item["id"] == wid
        and item["type"] == "workflow_job_template"
        and item["url"] == f"/api/v2/workflow_job_templates/{wid}/"
    )
    assert item["related"]["launch"] == f"/api/v2/workflow_job_templates/{wid}/launch/"
    assert item["related"]["workflow_jobs"] == f"/api/v2/workflow_job_templates/{wid}/workflow_jobs/"
    assert item["extra_vars"] == "---\nstack_namespace: staging-stack" and item["status"] == "never updated"
    assert (item["inventory"], item["limit"], item["job_tags"], item["ask_variables_on_launch"]) == (
        None,
        None,
        None,
        True,
    )
    assert "execution_environment" not in item and "playbook" not in item
    assert http.get(f"{url}{wid}/", timeout=5).json()["name"] == "Deploy Stack"
    assert http.get(f"{url}{jt}/", timeout=5).status_code == 404  # a job template is not a workflow job template
    refused = http.get(url, params={"extra_vars__contains": "staging"}, timeout=5)
    assert refused.status_code == 403 and refused.json() == {"detail": "Filtering on extra_vars is not allowed."}


def test_workflow_launch_info(awx: FakeAwx, http: requests.Session) -> None:
    wid = awx.add_workflow_template("Deploy", extra_vars="a: 1", ask_limit_on_launch=True)
    info = http.get(f"{awx.base}/api/v2/workflow_job_templates/{wid}/launch/", timeout=5).json()
    assert info["can_start_without_user_input"] is True  # unlike a job template, ask_* flags do not count
    assert info["ask_variables_on_launch"] is True and info["ask_limit_on_launch"] is True
    assert info["workflow_job_template_data"] == {"name": "Deploy", "id": wid, "description": ""}
    assert info["defaults"]["extra_vars"] == "a: 1" and info["defaults"]["inventory"] == {"name": None, "id": None}
    assert info["node_templates_missing"] == [] and "extra_vars" not in info and "limit" not in info


def test_workflow_launch_creates_a_pending_workflow_job(awx: FakeAwx, http: requests.Session) -> None:
    wid = awx.add_workflow_template("Deploy", extra_vars="---\nstack_image: xchem/fragalysis-stack")
    resp = _workflow_launch(awx, http, wid, {"stack_image_tag": "2026.08.3"})
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert list(body)[:2] == ["workflow_job", "ignored_fields"] and "job" not in body
    assert body["workflow_job"] == body["id"] == 4242 and body["ignored_fields"] == {}
    assert resp.headers["Location"] == f"{awx.base}/api/v2/workflow_jobs/4242/"
    assert (body["type"], body["url"], body["status"], body["launch_type"]) == (
        "workflow_job", "/api/v2/workflow_jobs/4242/", "pending", "manual",
    )  # fmt: skip
    assert (body["workflow_job_template"], body["unified_job_template"], body["job_template"]) == (wid, wid, None)
    assert body["is_sliced_job"] is False and body["failed"] is False and body["elapsed"] == 0.0
    assert json.loads(body["extra_vars"]) == {"stack_image": "xchem/fragalysis-stack", "stack_image_tag": "2026.08.3"}
    assert body["launched_by"] == {"id": 1, "name": "admin", "type": "user", "url": "/api/v2/users/1/"}
    for absent in ("execution_node", "controller_node", "event_processing_finished", "execution_environment"):
        assert absent not in body
    assert body["job_args"] == "" and body["limit"] is None
    assert awx.workflow_launches == [(wid, {"stack_image_tag": "2026.08.3"})] and awx.launches == []
    assert set(awx.workflow_jobs) == {4242} and awx.jobs == {}
    summary = http.get(f"{awx.base}/api/v2/workflow_job_templates/{wid}/", timeout=5).json()
    assert summary["status"] == "pending"
    assert _launch(awx, http, awx.add_template(STAGING)).json()["id"] == 4243  # one id sequence (UnifiedJob)


def test_workflow_template_refuses_unprompted_values_with_400(awx: FakeAwx, http: requests.Session) -> None:
    wid = awx.add_workflow_template("Deploy", ask_variables_on_launch=False, extra_vars="stack_image_tag: latest")
    refused = _workflow_launch(awx, http, wid, {"stack_image_tag": "2026.08.3", "b": 1})
    assert refused.status_code == 400
    assert refused.json() == {
        "extra_vars": [
            "Variables stack_image_tag, b are not allowed on launch. Check the Prompt on Launch setting on the "
            "Workflow Job Template to include Extra Variables."
        ]
    }
    limited = _workflow_launch(awx, http, wid, limit="stack-0")
    assert limited.status_code == 400 and limited.json() == {"limit": ["Field is not configured to prompt on launch."]}
    bad = _workflow_launch(awx, http, wid, "{not json")
    assert bad.status_code == 400 and bad.json()["extra_vars"][0].startswith("Cannot parse as JSON (error: ")
    assert awx.workflow_jobs == {} and awx.workflow_launches == []
    same = _workflow_launch(awx, http, wid, {"stack_image_tag": "latest"})  # equal to the saved value: pruned
    assert same.status_code == 201 and same.json()["ignored_fields"] == {}
    assert json.loads(same.json()["extra_vars"]) == {"stack_image_tag": "latest"}


def test_workflow_job_progress_follows_the_script(awx: FakeAwx, http: requests.Session, clock: Clock) -> None:
    wid = awx.add_workflow_template("Deploy")
    awx.script("failed", polls=2, count=1)
    first = _workflow_launch(awx, http, wid).json()["id"]
    seen = []
    for _ in range(4):
        clock.tick(10)
        seen.append(_workflow_job(awx, http, first))
    assert [w["status"] for w in seen] == ["pending", "running", "failed", "failed"]
    assert seen[1]["started"] == "2026-08-20T12:00:20.000000Z" and seen[2]["elapsed"] == 10.0
    assert seen[2]["job_explanation"] == "No error handling paths found, marking workflow as failed"
    assert all("event_processing_finished" not in w for w in seen)
    second = _workflow_launch(awx, http, wid).json()["id"]
    awx.set_job_status(second, "running")
    clock.tick(2.5)
    assert _workflow_job(awx, http, second)["elapsed"] == 2.5
    job = _launch(awx, http, awx.add_template(STAGING)).json()["id"]
    missing = http.get(f"{awx.base}/api/v2/workflow_jobs/{job}/", timeout=5)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not found."}  # a job is no workflow job


def test_workflow_job_cancel(awx: FakeAwx, http: requests.Session) -> None:
    wid = awx.add_workflow_template("Deploy")
    pending, running = (_workflow_launch(awx, http, wid).json()["id"] for _ in range(2))
    awx.set_job_status(running, "running")
    url = f"{awx.base}/api/v2/workflow_jobs/{{}}/cancel/"
    assert http.get(url.format(running), timeout=5).json() == {"can_cancel": True}
    assert http.post(url.format(pending), timeout=5).status_code == 202
    assert _workflow_job(awx, http, pending)["status"] == "canceled"  # not started: canceled in the request
    assert http.post(url.format(running), timeout=5).status_code == 202
    assert [_workflow_job(awx, http, running)["status"] for _ in range(2)] == ["running", "canceled"]
    assert http.post(url.format(running), timeout=5).status_code == 405
    assert http.get(url.format(4999), timeout=5).status_code == 404


def test_workflow_jobs_list_filters_and_refuses_extra_vars_search(
    awx: FakeAwx, http: requests.Session, clock: Clock
) -> None:
    staging, production = awx.add_workflow_template("Staging"), awx.add_workflow_template("Production")
    sliced = awx.add_template("Sliced", job_slice_count=2)
    ids = []
    for tid in (staging, production, staging):
        ids.append(_workflow_launch(awx, http, tid, {"tag": str(tid)}).json()["id"])
        clock.tick(60)
    ids.append(_launch(awx, http, sliced).json()["workflow_job"])
    awx.set_job_status(ids[0], "successful")
    url = f"{awx.base}/api/v2/workflow_jobs/"
    since = (T0 + timedelta(seconds=30)).isoformat()
    params = {"workflow_job_template": str(staging), "created__gte": since, "order_by": "-created"}
    assert [w["id"] for w in http.get(url, params=params, timeout=5).json()["results"]] == [ids[2]]
    everyone = http.get(url, params={"order_by": "-created", "launch_type": "manual"}, timeout=5).json()
    assert [w["id"] for w in everyone["results"]] == [ids[3], ids[2], ids[1], ids[0]]
    active = http.get(url, params={"status": "pending", "workflow_job_template": str(staging)}, timeout=5).json()
    assert [w["id"] for w in active["results"]] == [ids[2]]
    by_jt = http.get(url, params={"job_template": str(sliced)}, timeout=5).json()
    assert [w["id"] for w in by_jt["results"]] == [ids[3]] and by_jt["results"][0]["is_sliced_job"] is True
    item = everyone["results"][1]
    for absent in ("job_args", "job_cwd", "job_env", "result_traceback", "execution_node"):
        assert absent not in item
    assert json.loads(item["extra_vars"]) == {"tag": str(staging)}
    sub = http.get(f"{awx.base}/api/v2/workflow_job_templates/{production}/workflow_jobs/", timeout=5).json()
    assert [w["id"] for w in sub["results"]] == [ids[1]]
    for key in ("extra_vars__contains", "extra_vars", "not__job_env__icontains", "survey_passwords"):
        refused = http.get(url, params={key: "x"}, timeout=5)
        field = key.removeprefix("not__").split("__")[0]
        assert refused.status_code == 403 and refused.json() == {"detail": f"Filtering on {field} is not allowed."}
    password = http.get(url, params={"start_args__contains": "x"}, timeout=5)  # UnifiedJob.PASSWORD_FIELDS
    assert password.status_code == 403 and password.json() == {"detail": "Filtering on password fields is not allowed."}


def test_sliced_template_launch_answers_workflow_job_and_spawns_slices_when_it_runs(
    awx: FakeAwx, http: requests.Session, clock: Clock
) -> None:
    tid = awx.add_template(STAGING, job_slice_count=3)
    resp = _launch(awx, http, tid, {"stack_image_tag": "2026.08.3"})
    assert resp.status_code == 201
    body = resp.json()
    assert list(body)[:2] == ["workflow_job", "ignored_fields"] and "job" not in body
    assert resp.headers["Location"] == f"{awx.base}/api/v2/workflow_jobs/{body['id']}/"
    assert (body["type"], body["job_template"], body["unified_job_template"]) == ("workflow_job", tid, tid)
    assert body["is_sliced_job"] is True and body["workflow_job_template"] is None and body["status"] == "pending"
    assert json.loads(body["extra_vars"])["stack_image_tag"] == "2026.08.3" and body["limit"] == ""
    assert awx.launches == [(tid, {"stack_image_tag": "2026.08.3"})] and awx.jobs == {}  # no slices yet
    wid = body["id"]
    assert _workflow_job(awx, http, wid)["status"] == "pending" and awx.jobs == {}
    clock.tick(10)
    assert _workflow_job(awx, http, wid)["status"] == "running"
    slices = http.get(f"{awx.base}/api/v2/jobs/", params={"job_template": str(tid)}, timeout=5).json()["results"]
    assert [(j["job_slice_number"], j["job_slice_count"], j["status"]) for j in slices] == [
        (1, 3, "pending"), (2, 3, "pending"), (3, 3, "pending"),
    ]  # fmt: skip
    first = slices[0]
    assert (first["launch_type"], first["unified_job_template"], first["allow_simultaneous"]) == ("workflow", tid, True)
    assert first["extra_vars"] == body["extra_vars"] and first["created"] == "2026-08-20T12:00:10.000000Z"
    assert first["related"]["source_workflow_job"] == f"/api/v2/workflow_jobs/{wid}/"
    assert first["summary_fields"]["source_workflow_job"]["id"] == wid
    assert first["launched_by"]["name"] == "admin"
    assert _workflow_job(awx, http, wid)["status"] == "successful"
    assert {awx.jobs[j["id"]]["status"] for j in slices} == {"successful"}
    template = http.get(f"{awx.base}/api/v2/job_templates/{tid}/", timeout=5).json()
    assert template["status"] == "successful"

    awx.script("failed", polls=0, count=1)
    failing = _launch(awx, http, tid).json()["workflow_job"]
    assert _workflow_job(awx, http, failing)["status"] == "failed"
    ends = [j["status"] for j in awx.jobs.values() if j["id"] > failing]
    assert ends == ["failed", "successful", "successful"]


def test_a_sliced_template_without_enough_hosts_launches_a_plain_job(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING, job_slice_count=3)
    awx.inventory_hosts = 1  # get_effective_slice_ct: min(job_slice_count, hosts)
    body = _launch(awx, http, tid).json()
    assert body["job"] == body["id"] and "workflow_job" not in body and body["job_slice_count"] == 1
    asked = awx.add_template("Asked", ask_job_slice_count_on_launch=True)
    ignored = _launch(awx, http, asked, job_slice_count=4).json()
    assert ignored["ignored_fields"] == {"job_slice_count": 4} and ignored["type"] == "job"
    awx.inventory_hosts = None
    assert "workflow_job" in _launch(awx, http, asked, job_slice_count=2).json()


def test_corrupt_overwrites_fields_in_every_answer(awx: FakeAwx, http: requests.Session) -> None:
    job_id = _launch(awx, http, awx.add_template(STAGING)).json()["id"]
    awx.corrupt("job", job_id, elapsed=10**330, status=None, extra_vars=["not", "a", "string"])
    raw = http.get(f"{awx.base}/api/v2/jobs/{job_id}/", timeout=5)
    assert f'"elapsed": 1{"0" * 330},'.encode() in raw.content
    detail = raw.json()
    assert detail["elapsed"] == 10**330 and detail["status"] is None and detail["extra_vars"] == ["not", "a", "string"]
    listed = http.get(f"{awx.base}/api/v2/jobs/", params={"status": "pending"}, timeout=5).json()  # as stored
    assert [j["status"] for j in listed["results"]] == [None]
    wid = _workflow_launch(awx, http, awx.add_workflow_template("Deploy")).json()["id"]
    awx.corrupt("workflow_job", wid, failed="yes")
    assert _workflow_job(awx, http, wid)["failed"] == "yes"
    with pytest.raises(KeyError):
        awx.corrupt("workflow_job", job_id, failed=True)
    with pytest.raises(TypeError):
        awx.corrupt("job", job_id, started=object())


def test_broken_body_is_answered_after_the_request_was_processed(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    awx.broken_body_next("launch")
    resp = _launch(awx, http, tid)
    assert (resp.status_code, resp.content, resp.headers["Content-Type"]) == (200, b'{"id": ', "application/json")
    assert list(awx.jobs) == [4242]  # AWX did launch it
    awx.broken_body_next("job", count=2, body=b"")
    assert [http.get(f"{awx.base}/api/v2/jobs/4242/", timeout=5).content for _ in range(2)] == [b"", b""]
    assert _job(awx, http, 4242)["status"] == "successful"  # the two broken GETs moved it on too


def test_repeat_next_link_loops_on_the_same_page(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    _launch(awx, http, tid)
    awx.repeat_next_link("jobs")
    url = f"{awx.base}/api/v2/jobs/"
    first = http.get(url, params={"order_by": "-created"}, timeout=5).json()
    assert first["next"] == "/api/v2/jobs/?order_by=-created&page=1" and first["count"] == 1
    again = http.get(urljoin(url, first["next"]), timeout=5).json()
    assert again == first
    sub = http.get(f"{awx.base}/api/v2/job_templates/{tid}/jobs/", timeout=5).json()
    assert sub["next"] == f"/api/v2/job_templates/{tid}/jobs/?page=1"
    assert http.get(f"{awx.base}/api/v2/job_templates/", timeout=5).json()["next"] is None  # other kinds: normal
    awx.repeat_next_link("jobs", False)
    assert http.get(url, timeout=5).json()["next"] is None


def test_launch_by_hand_looks_like_a_launch_by_that_user(awx: FakeAwx, http: requests.Session) -> None:
    tid = awx.add_template(STAGING)
    mine = _launch(awx, http, tid, {"stack_image_tag": "2026.08.3"}).json()
    theirs_id = awx.launch_by_hand(tid, {"stack_image_tag": "2026.08.3"})
    theirs = _job(awx, http, theirs_id)
    assert theirs_id == mine["id"] + 1 and awx.launches == [(tid, {"stack_image_tag": "2026.08.3"})]
    assert theirs["launched_by"] == {"id": 3, "name": "operator", "type": "user", "url": "/api/v2/users/3/"}
    assert theirs["related"]["created_by"] == "/api/v2/users/3/" and theirs["launch_type"] == "manual"
    assert theirs["summary_fields"]["created_by"]["username"] == "operator"
    assert theirs["extra_vars"] == mine["extra_vars"] and theirs["job_template"] == tid
    by_alice = awx.launch_by_hand(tid, {}, user="alice")
    assert _job(awx, http, by_alice)["launched_by"]["id"] == 2  # a known user keeps her id
    wid = awx.add_workflow_template("Deploy", ask_variables_on_launch=False)
    with pytest.raises(ValueError, match="not allowed on launch"):
        awx.launch_by_hand(wid, {"x": 1}, workflow=True)
    workflow_job = awx.launch_by_hand(wid, {}, workflow=True, user="operator")
    assert _workflow_job(awx, http, workflow_job)["launched_by"]["name"] == "operator"
    assert awx.workflow_launches == []

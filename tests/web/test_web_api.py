"""The JSON API, /send, /healthz and rq-dashboard through Flask's test client on a real redis-server."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import jsonschema_rs
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from angora_rq.core.keys import Keys
from angora_rq.core.schema import Exec, Run
from angora_rq.processes.redis_server import free_port
from angora_rq.core.settings import Settings
from angora_rq.web import create_app
from angora_rq.web.openapi import document

JOBS = """\
- name: extract
  triggers: [etl.start]
  command: echo extract
  messages: [etl.extracted]
- name: load
  triggers: [etl.extracted]
  command: echo load
- name: joined
  triggers: [etl.join]
  command: echo joined
  parent_success: true
"""

MakeApp = Callable[..., Flask]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A definitions folder with a two-job workflow and a parent_success job."""
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "jobs.yml").write_text(JOBS)
    return folder


@pytest.fixture
def make_app(redis_url: str, keys: Keys, tmp_path: Path, config_dir: Path) -> MakeApp:
    """Factory: an app on this test's Redis db, prefix and definitions, with Settings overrides."""
    def make(**overrides: Any) -> Flask:
        fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=config_dir,
                                      data_dir=tmp_path / "data")
        fields.update(overrides)
        return create_app({"SETTINGS": Settings(**fields), "TESTING": True})
    return make


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    """The app with auth off."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client (a script: no browser headers)."""
    return app.test_client()


def conforms(resp: Any, path: str, method: str = "get") -> dict[str, Any]:
    """Assert the response body matches the OpenAPI document for its status; return it."""
    doc = document()
    spec = doc["paths"][path][method]["responses"][str(resp.status_code)]
    schema = dict(spec["content"]["application/json"]["schema"], components=doc["components"])
    body = resp.get_json()
    errors = [str(e) for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
    assert not errors, f"{method.upper()} {path} {resp.status_code}: {errors[:3]}\n{json.dumps(body)[:2000]}"
    return body


def run_job(client: FlaskClient, name: str = "extract", **body: Any) -> dict[str, str]:
    """Run a job by hand through the API; return {run_id, execution_id}."""
    resp = client.post(f"/api/v1/jobs/{name}/run", json=body)
    assert resp.status_code == 202, resp.get_json()
    return conforms(resp, "/api/v1/jobs/{name}/run", "post")


# -- factory -----------------------------------------------------------------------------------------

def test_factory_builds_resources_without_connecting() -> None:
    """create_app on a closed port works: nothing connects until a request needs Redis."""
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", config_path=Path("/nonexistent"))
    app = create_app({"SETTINGS": settings})
    ext = app.extensions["angora"]
    for name in ("r", "keys", "queries", "control", "source", "settings", "definitions"):
        assert hasattr(ext, name)
    import angora_rq.web as web
    assert not hasattr(web, "app")


# -- jobs ----------------------------------------------------------------------------------------------

def test_jobs_list_has_definitions_and_stats(client: FlaskClient) -> None:
    run_job(client)
    body = conforms(client.get("/api/v1/jobs"), "/api/v1/jobs")
    jobs = {j["name"]: j for j in body["jobs"]}
    assert set(jobs) == {"extract", "load", "joined"}
    assert jobs["extract"]["triggers"] == ["etl.start"]
    assert jobs["extract"]["stats"]["last_status"] == "queued"
    assert jobs["load"]["stats"]["success_rate"] is None


def test_job_detail_with_graph_neighbours_and_paged_executions(client: FlaskClient) -> None:
    ids = [run_job(client)["execution_id"] for _ in range(3)]
    body = conforms(client.get("/api/v1/jobs/extract?limit=2"), "/api/v1/jobs/{name}")
    assert body["job"]["command"] == ["echo", "extract"]
    assert body["children"] == ["load"] and body["parents"] == []
    assert body["executions"]["total"] == 3
    assert [e["id"] for e in body["executions"]["items"]] == ids[::-1][:2]
    page2 = client.get("/api/v1/jobs/extract?limit=2&offset=2").get_json()
    assert [e["id"] for e in page2["executions"]["items"]] == [ids[0]]
    assert client.get("/api/v1/jobs/load").get_json()["parents"] == ["extract"]


@pytest.mark.parametrize("query", ["limit=0", "limit=501", "limit=abc", "offset=-1", "offset=1.5", "limit="])
def test_bad_paging_is_400(client: FlaskClient, query: str) -> None:
    resp = client.get(f"/api/v1/jobs/extract?{query}")
    assert resp.status_code == 400
    assert "error" in conforms(resp, "/api/v1/jobs/{name}")


def test_unknown_job_is_404(client: FlaskClient) -> None:
    assert conforms(client.get("/api/v1/jobs/nope"), "/api/v1/jobs/{name}")["error"]
    assert client.post("/api/v1/jobs/nope/run", json={}).status_code == 404


# -- running a job by hand -----------------------------------------------------------------------------

def test_run_job_with_params_and_run_id(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    started = run_job(client, params={"DAY": "2024-01-01"}, run_id="my-run_1")
    assert started["run_id"] == "my-run_1"
    ex = client.get(f"/api/v1/executions/{started['execution_id']}").get_json()
    assert ex["params"] == {"DAY": "2024-01-01"} and ex["origin"] == "manual" and ex["status"] == "queued"
    assert r.lrange(keys.rq_queue("default"), 0, -1) == [started["execution_id"].encode()]


def test_run_job_without_body_makes_a_new_run(client: FlaskClient) -> None:
    resp = client.post("/api/v1/jobs/extract/run")
    assert resp.status_code == 202 and resp.get_json()["run_id"]


@pytest.mark.parametrize("body", [
    {"params": {"1bad": "x"}}, {"params": ["x"]}, {"params": {"A": True}}, {"run_id": "has space"},
    {"run_id": 5}, {"paramz": {}}, [1, 2],
])
def test_run_job_bad_input_is_400(client: FlaskClient, body: Any) -> None:
    resp = client.post("/api/v1/jobs/extract/run", json=body)
    assert resp.status_code == 400, resp.get_json()
    conforms(resp, "/api/v1/jobs/{name}/run", "post")


def test_run_job_non_json_body_is_400(client: FlaskClient) -> None:
    resp = client.post("/api/v1/jobs/extract/run", data="params=1", content_type="text/plain")
    assert resp.status_code == 400
    resp = client.post("/api/v1/jobs/extract/run", data="{not json", content_type="application/json")
    assert resp.status_code == 400


def test_parent_success_job_outside_a_run_is_409(client: FlaskClient) -> None:
    resp = client.post("/api/v1/jobs/joined/run", json={})
    assert resp.status_code == 409
    assert "parent_success" in conforms(resp, "/api/v1/jobs/{name}/run", "post")["error"]


# -- runs --------------------------------------------------------------------------------------------

def test_run_detail_has_status_plan_and_pending_jobs(client: FlaskClient) -> None:
    started = run_job(client)
    body = conforms(client.get(f"/api/v1/runs/{started['run_id']}"), "/api/v1/runs/{run_id}")
    assert body["status"] == "queued"  # nothing has started yet (runs.summarize)
    assert body["plan"]["jobs"] == ["extract", "load"]
    assert body["jobs"]["extract"]["status"] == "queued"
    assert body["jobs"]["load"]["status"] == "pending"
    assert [e["id"] for e in body["executions"]] == [started["execution_id"]]


@pytest.mark.parametrize("run_id", ["nope", "bad:id", "x" * 65])
def test_unknown_run_is_404(client: FlaskClient, run_id: str) -> None:
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 404
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 404


def test_runs_list_filters_and_pages(client: FlaskClient) -> None:
    first = run_job(client)["run_id"]
    time.sleep(0.01)
    mid = time.time()
    second = run_job(client)["run_id"]
    body = conforms(client.get("/api/v1/runs"), "/api/v1/runs")
    assert [x["run_id"] for x in body["runs"]] == [second, first] and body["total"] == 2
    assert [x["run_id"] for x in client.get(f"/api/v1/runs?since={mid}").get_json()["runs"]] == [second]
    assert [x["run_id"] for x in client.get(f"/api/v1/runs?until={mid}").get_json()["runs"]] == [first]
    assert [x["run_id"] for x in client.get("/api/v1/runs?limit=1&offset=1").get_json()["runs"]] == [first]
    assert len(client.get("/api/v1/runs?status=queued&job=extract").get_json()["runs"]) == 2
    assert client.get("/api/v1/runs?status=succeeded").get_json()["runs"] == []
    assert client.get("/api/v1/runs?job=joined").get_json()["runs"] == []
    assert client.get(f"/api/v1/runs?since={mid}&until={mid - 1}").get_json()["runs"] == []


def test_runs_list_gives_end_time_and_duration_once_a_run_has_ended(client: FlaskClient, r: redis.Redis,
                                                                   keys: Keys) -> None:
    started = run_job(client)
    [running] = conforms(client.get("/api/v1/runs"), "/api/v1/runs")["runs"]
    assert (running["status"], running["ended"], running["duration"]) == ("queued", None, None)
    client.post(f"/api/v1/runs/{started['run_id']}/cancel")  # its one execution goes: the run ends now
    [ended] = conforms(client.get("/api/v1/runs"), "/api/v1/runs")["runs"]
    assert ended["status"] == "canceled" and ended["ended"] >= ended["created"]
    assert ended["duration"] == pytest.approx(ended["ended"] - ended["created"])
    detail = conforms(client.get(f"/api/v1/runs/{started['run_id']}"), "/api/v1/runs/{run_id}")
    assert (detail["ended"], detail["duration"]) == (ended["ended"], ended["duration"])
    # A run recorded before runs kept an end time: no duration, no error.
    r.hset(keys.run("old-run"), mapping={Run.created: "1000.0", Run.active: "0", Run.topic: "etl.start"})
    r.zadd(keys.runs(), {"old-run": 1000.0})
    old = conforms(client.get("/api/v1/runs?until=2000"), "/api/v1/runs")["runs"]
    assert [(x["run_id"], x["status"], x["ended"], x["duration"]) for x in old] == [
        ("old-run", "succeeded", None, None)]


@pytest.mark.parametrize("query", ["since=abc", "until=-1", "since=nan", "since=inf",
                                   "status=" + "x" * 65, "limit=-3"])
def test_runs_list_bad_query_is_400(client: FlaskClient, query: str) -> None:
    resp = client.get(f"/api/v1/runs?{query}")
    assert resp.status_code == 400
    conforms(resp, "/api/v1/runs")


def test_cancel_run(client: FlaskClient) -> None:
    started = run_job(client)
    run_id = started["run_id"]
    resp = client.post(f"/api/v1/runs/{run_id}/cancel")
    assert conforms(resp, "/api/v1/runs/{run_id}/cancel", "post") == {
        "run_id": run_id, "canceled": True, "dropped": [started["execution_id"]], "kill_requested": []}
    run = client.get(f"/api/v1/runs/{run_id}").get_json()
    assert run["canceled"] is True and run["status"] == "canceled"  # the queued execution went at once


def test_cancel_run_with_kill_asks_the_worker(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    started = run_job(client)
    xid = started["execution_id"]
    r.hset(keys.execution(xid), mapping={Exec.status: "running", Exec.worker: "w1"})  # as CLAIM leaves it
    resp = client.post(f"/api/v1/runs/{started['run_id']}/cancel?kill=true")
    assert conforms(resp, "/api/v1/runs/{run_id}/cancel", "post")["kill_requested"] == [xid]
    assert r.lrange(keys.worker_control("w1"), 0, -1) == [f"kill {xid}".encode()]
    resp = client.post(f"/api/v1/runs/{started['run_id']}/cancel?kill=maybe")
    assert resp.status_code == 400 and "kill" in conforms(resp, "/api/v1/runs/{run_id}/cancel", "post")["error"]


# -- executions --------------------------------------------------------------------------------------

def test_execution_detail_with_tail(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    xid = run_job(client)["execution_id"]
    r.set(keys.tail(xid), "line one\nline two\n")  # a long tail is kept beside its execution
    body = conforms(client.get(f"/api/v1/executions/{xid}"), "/api/v1/executions/{execution_id}")
    assert body["tail"] == "line one\nline two\n" and body["tail_truncated"] is False
    assert body["spec"]["name"] == "extract"
    short = client.get(f"/api/v1/executions/{xid}?tail=9").get_json()
    assert short["tail"] == "line two\n" and short["tail_truncated"] is True
    assert client.get(f"/api/v1/executions/{xid}?tail=0").get_json()["tail"] == ""
    assert client.get(f"/api/v1/executions/{xid}?tail=65537").status_code == 400


@pytest.mark.parametrize("action", ["kill", "retry", "skip"])
def test_actions_on_unknown_execution_are_404(client: FlaskClient, action: str) -> None:
    resp = client.post(f"/api/v1/executions/0123456789abcdef/{action}")
    assert resp.status_code == 404
    conforms(resp, f"/api/v1/executions/{{execution_id}}/{action}", "post")
    assert client.get("/api/v1/executions/no:such").status_code == 404


def test_kill_waiting_then_retry_then_conflicts(client: FlaskClient) -> None:
    xid = run_job(client)["execution_id"]
    killed = client.post(f"/api/v1/executions/{xid}/kill")
    assert conforms(killed, "/api/v1/executions/{execution_id}/kill", "post")["result"] == "killed"
    again = client.post(f"/api/v1/executions/{xid}/kill")
    assert again.status_code == 409 and "error" in again.get_json()
    retried = client.post(f"/api/v1/executions/{xid}/retry")
    new = conforms(retried, "/api/v1/executions/{execution_id}/retry", "post")["execution_id"]
    assert new != xid and client.get(f"/api/v1/executions/{new}").get_json()["attempt"] == 2
    assert client.post(f"/api/v1/executions/{new}/retry").status_code == 409  # still queued
    assert client.post(f"/api/v1/executions/{new}/skip").status_code == 409


def test_a_kill_that_meets_a_change_looks_again(client: FlaskClient, r: redis.Redis, keys: Keys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker claims or holds an execution between kill's read and its write (the transaction is refused): kill
    reads it again and acts on what it finds, instead of failing with redis-py's WatchError (a CI run did)."""
    from angora_rq.store.control import Control

    xid = run_job(client)["execution_id"]
    drop, calls = Control._drop_waiting, []

    def changed_meanwhile(self: Control, pipe: Any, f: dict[str, str], status: str) -> None:
        calls.append(status)
        if len(calls) == 1:
            r.hset(keys.execution(xid), "touched", "1")  # another client writes the watched execution
        drop(self, pipe, f, status)
    monkeypatch.setattr(Control, "_drop_waiting", changed_meanwhile)
    killed = client.post(f"/api/v1/executions/{xid}/kill")
    assert conforms(killed, "/api/v1/executions/{execution_id}/kill", "post")["result"] == "killed"
    assert len(calls) == 2 and r.hget(keys.execution(xid), Exec.status) == b"killed"


def test_skip_failed_execution(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    started = run_job(client)
    xid = started["execution_id"]
    r.hset(keys.execution(xid), mapping={Exec.status: "failed", Exec.ended: time.time()})
    r.lrem(keys.rq_queue("default"), 1, xid)
    resp = client.post(f"/api/v1/executions/{xid}/skip")
    assert conforms(resp, "/api/v1/executions/{execution_id}/skip", "post")["status"] == "skipped"
    assert client.get(f"/api/v1/executions/{xid}").get_json()["status"] == "skipped"
    assert r.xlen(keys.stream()) == 1  # its message went out, so `load` will run
    assert client.post(f"/api/v1/executions/{xid}/skip").status_code == 409


# -- messages ----------------------------------------------------------------------------------------

def _entry(r: redis.Redis, keys: Keys, message_id: str) -> dict[str, str]:
    entries: Any = r.xrange(keys.stream(), message_id, message_id)
    [(_, fields)] = entries
    return {k.decode(): v.decode() for k, v in fields.items()}


def test_send_original_form(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    resp = client.post("/send", data={"msg": "time.0105"})
    body = conforms(resp, "/send", "post")
    assert resp.status_code == 202
    fields = _entry(r, keys, body["message_id"])
    assert fields["t"] == "time.0105" and fields["r"] == body["run_id"] and fields["o"] == "http"


def test_send_form_params_and_run_id(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    resp = client.post("/send", data={"msg": "etl.start", "run_id": "r1", "param.DAY": "mon",
                                      "params": json.dumps({"HOUR": "5"})})
    assert resp.status_code == 202 and resp.get_json()["run_id"] == "r1"
    fields = _entry(r, keys, resp.get_json()["message_id"])
    assert json.loads(fields["p"]) == {"HOUR": "5", "DAY": "mon"}


def test_send_json_and_api_messages(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    for url in ("/send", "/api/v1/messages"):
        resp = client.post(url, json={"msg": "etl.start", "params": {"A": "1", "N": 2}})
        body = conforms(resp, url, "post")
        assert json.loads(_entry(r, keys, body["message_id"])["p"]) == {"A": "1", "N": "2"}
    assert r.xlen(keys.stream()) == 2


@pytest.mark.parametrize("kwargs", [
    {"data": {}}, {"data": {"msg": ""}}, {"data": {"msg": "a..b"}}, {"data": {"msg": "a b"}},
    {"data": {"msg": "a.b", "params": "{bad"}}, {"data": {"msg": "a.b", "params": "[1]"}},
    {"data": {"msg": "a.b", "param.1x": "v"}}, {"data": {"msg": "a.b", "color": "red"}},
    {"data": {"msg": "a.b", "run_id": "bad id"}},
    {"json": {"params": {}}}, {"json": {"msg": 5}}, {"json": {"msg": "a.b", "extra": 1}}, {"json": "a.b"},
    {"json": {"msg": "a.b", "params": {"X": "\u0000"}}}, {"json": {"msg": "a.b", "params": {"X": "\ud800"}}},
    {"data": "msg=a.b", "content_type": "text/plain"}, {"data": "{", "content_type": "application/json"},
])
def test_send_bad_input_is_400_json(client: FlaskClient, kwargs: dict[str, Any]) -> None:
    resp = client.post("/send", **kwargs)
    assert resp.status_code == 400, resp.get_json()
    assert conforms(resp, "/send", "post")["error"]


def test_send_over_the_work_budget_is_503_with_retry_after(make_app: MakeApp) -> None:
    client = make_app(backlog=2).test_client()
    codes = [client.post("/send", data={"msg": "a.b"}).status_code for _ in range(5)]
    assert codes == [202, 202, 503, 503, 503]
    resp = client.post("/send", json={"msg": "a.b"})
    assert conforms(resp, "/send", "post")["detail"]["budget"] == "work"
    assert resp.headers["Retry-After"] == "5"
    status = client.get("/api/v1/status")
    assert conforms(status, "/api/v1/status", "get")["work"] == {"used": 2, "limit": 2, "ratio": 1.0, "full": True}


def test_send_past_the_memory_budget_is_503_with_retry_after(make_app: MakeApp) -> None:
    """ANGORA_MAX_MEMORY below what Redis already uses: nothing more is accepted."""
    client = make_app(max_memory=1).test_client()
    resp = client.post("/send", json={"msg": "a.b"})
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "30"
    assert conforms(resp, "/send", "post")["detail"]["budget"] == "memory"
    memory = conforms(client.get("/api/v1/status"), "/api/v1/status", "get")["memory"]
    assert memory["limit"] == 1 and memory["source"] == "ANGORA_MAX_MEMORY" and memory["used"] > 1 and memory["full"]


def test_send_when_redis_is_out_of_memory_is_503(client: FlaskClient, r: redis.Redis) -> None:
    old: Any = r.config_get("maxmemory")["maxmemory"]
    r.config_set("maxmemory", 1)
    try:
        resp = client.post("/send", data={"msg": "a.b"})
        run = client.post("/api/v1/jobs/extract/run", json={})
    finally:
        r.config_set("maxmemory", old)
    assert resp.status_code == 503 and "memory" in resp.get_json()["error"].lower()
    assert run.status_code == 503 and "error" in run.get_json()


# -- graph, config -------------------------------------------------------------------------------------

def test_graph(client: FlaskClient) -> None:
    body = conforms(client.get("/api/v1/graph"), "/api/v1/graph")
    assert body["nodes"] and body["edges"]
    assert "extract" in json.dumps(body["nodes"]) and "load" in json.dumps(body["edges"])


def test_config_status_keeps_last_good_and_reports_errors(app: Flask, client: FlaskClient,
                                                          config_dir: Path) -> None:
    body = conforms(client.get("/api/v1/config"), "/api/v1/config")
    assert body["valid"] and body["loaded"] and body["jobs"] == 3 and body["version"]
    good = body["version"]
    (config_dir / "jobs.yml").write_text("- name: broken\n  triggers: [\n")
    app.extensions["angora"].definitions.refresh(force=True)
    body = conforms(client.get("/api/v1/config"), "/api/v1/config")
    assert not body["valid"] and body["errors"] and body["version"] == good
    assert len(client.get("/api/v1/jobs").get_json()["jobs"]) == 3  # still serving the last good version


def test_app_starts_with_invalid_definitions(make_app: MakeApp, config_dir: Path) -> None:
    (config_dir / "jobs.yml").write_text("- name: broken\n  triggers: [\n")
    client = make_app().test_client()
    body = conforms(client.get("/api/v1/config"), "/api/v1/config")
    assert not body["loaded"] and not body["valid"] and body["errors"][0]["text"]
    resp = client.get("/api/v1/jobs")
    assert resp.status_code == 503 and resp.get_json()["detail"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/send", data={"msg": "a.b"}).status_code == 202  # sending needs no definitions


# -- health ------------------------------------------------------------------------------------------

def test_healthz_lists_processes_with_liveness(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    now = time.time()
    r.hset(keys.heartbeats(), mapping={"matcher:m1": now - 1, "worker:w1": now - 2, "worker:old": now - 60,
                                       "other:x": now, "worker:bad": "nan?"})
    body = conforms(client.get("/healthz"), "/healthz")
    assert body["status"] == "ok" and body["redis"]["ok"]
    assert [(m["name"], m["alive"]) for m in body["matchers"]] == [("m1", True)]
    assert [(w["name"], w["alive"]) for w in body["workers"]] == [("w1", True), ("old", False)]
    r.hset(keys.heartbeats(), "matcher:m1", now - 30)
    assert client.get("/healthz").get_json()["status"] == "degraded"


# -- rq-dashboard ------------------------------------------------------------------------------------

def test_rq_dashboard_shows_angora_executions(client: FlaskClient, keys: Keys) -> None:
    """rq-dashboard lists this deployment's queue under the name RQ knows it by (the prefix in it: core/keys.py)."""
    xid = run_job(client)["execution_id"]
    queue = keys.rq_name("default")
    assert queue == f"{keys.prefix}:default"
    listing = client.get(f"/rq/0/data/jobs/{queue}/queued/8/asc/1.json")
    assert listing.status_code == 200
    assert xid in [j["id"] for j in listing.get_json()["jobs"]]
    job = client.get(f"/rq/0/data/job/{xid}.json")
    assert job.status_code == 200 and job.get_json()["status"] == "queued"
    assert "extract" in job.get_json()["description"]
    assert client.get(f"/rq/0/view/job/{xid}").status_code == 200
    assert client.get("/rq/").status_code == 200
    assert client.get("/rq/0/data/queues.json").get_json()["queues"][0]["name"] == queue
    assert client.get(f"/rq/0/view/jobs/{queue}/queued/8/asc/1").status_code == 200


def test_rq_dashboard_unknown_job_and_instance_are_404(client: FlaskClient) -> None:
    resp = client.get("/rq/0/data/job/nope.json")
    assert resp.status_code == 404 and resp.get_json()["error"]
    assert client.get("/rq/1/data/queues.json").status_code == 404
    assert client.get("/rq/0/view/job/nope").status_code == 404


# -- errors: JSON, never a 500 -------------------------------------------------------------------------

def test_unknown_api_route_and_wrong_method_are_json(client: FlaskClient) -> None:
    resp = client.get("/api/v1/nothing")
    assert resp.status_code == 404 and resp.get_json()["error"]
    resp = client.delete("/api/v1/jobs")
    assert resp.status_code == 405 and "GET" in resp.headers["Allow"] and resp.get_json()["error"]
    resp = client.post("/send", data="x" * (2 * 1024 * 1024), content_type="text/plain")
    assert resp.status_code == 413 and resp.get_json()["error"]


def test_unexpected_exception_is_logged_not_shown(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    @app.get("/api/v1/boom")
    def boom() -> Any:
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR):
        resp = app.test_client().get("/api/v1/boom")
    assert resp.status_code == 503
    assert "secret" not in resp.get_data(as_text=True) and "Traceback" not in resp.get_data(as_text=True)
    assert "secret internals" in caplog.text


ROUTES = [
    ("get", "/api/v1/jobs"), ("get", "/api/v1/jobs/extract"), ("post", "/api/v1/jobs/extract/run"),
    ("get", "/api/v1/runs"), ("get", "/api/v1/runs/r1"), ("post", "/api/v1/runs/r1/cancel"),
    ("get", "/api/v1/executions/x1"), ("post", "/api/v1/executions/x1/kill"),
    ("post", "/api/v1/executions/x1/retry"), ("post", "/api/v1/executions/x1/skip"),
    ("post", "/api/v1/messages"), ("post", "/send"),
    ("get", "/healthz"), ("get", "/rq/0/data/queues.json"),
    ("get", "/rq/0/data/jobs/default/queued/8/asc/1.json"), ("get", "/rq/0/data/job/x1.json"),
    ("get", "/rq/0/data/workers.json"), ("get", "/rq/"),
]


@pytest.mark.parametrize("method,url", ROUTES)
def test_redis_down_is_503_json_never_500(config_dir: Path, tmp_path: Path, method: str, url: str) -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", config_path=config_dir,
                        data_dir=tmp_path / "data")
    client = create_app({"SETTINGS": settings}).test_client()
    kwargs = {"json": {"msg": "a.b"}} if url.endswith(("send", "messages")) else {}
    resp = getattr(client, method)(url, **kwargs)
    assert resp.status_code in (200, 503), resp.get_data(as_text=True)[:300]
    if resp.status_code == 503 and url != "/rq/":
        body = resp.get_json()
        assert body is not None and ("error" in body or body["status"] == "unavailable")
    assert "Traceback" not in resp.get_data(as_text=True)


# -- `angora web` --------------------------------------------------------------------------------------

def test_host_choice_and_startup_warning() -> None:
    from angora_rq.cli.web_cmds import choose_host, startup_lines
    from angora_rq.core.security import exposure

    open_ = Settings()
    locked = Settings(auth_token="t")
    assert choose_host(open_, None) == "127.0.0.1"
    assert choose_host(locked, None) == "0.0.0.0"
    assert choose_host(Settings(bind="10.0.0.5"), None) == "10.0.0.5"
    assert choose_host(open_, "0.0.0.0") == "0.0.0.0"
    assert "UNAUTHENTICATED" in " ".join(startup_lines(open_, "127.0.0.1", 5000))
    assert "loopback" in " ".join(startup_lines(open_, "127.0.0.1", 5000))
    assert "anyone" in (exposure(Settings(auth_off=True), "0.0.0.0")[1] or "")  # logged at each start
    assert "UNAUTHENTICATED" not in " ".join(startup_lines(locked, "0.0.0.0", 5000))


@pytest.fixture
def web_process(angora_env: dict[str, str], angora_exe: list[str], config_dir: Path,
                tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    """`angora web` started the way a user does, on a free port."""
    port = free_port()
    log = tmp_path / "web.log"
    env = dict(angora_env, PORT=str(port), ANGORA_CONFIG=str(config_dir))
    env.pop("ANGORA_BIND", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen([*angora_exe, "web"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_angora_web_serves_on_loopback_and_stops_on_sigterm(
        web_process: tuple[subprocess.Popen, int, Path]) -> None:
    proc, port, log = web_process
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                assert json.load(resp)["redis"]["ok"] is True
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    text = log.read_text()
    assert "UNAUTHENTICATED" in text and "loopback" in text and "127.0.0.1" in text
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0


def test_angora_web_on_a_port_in_use_says_so(angora_env: dict[str, str], angora_exe: list[str],
                                             config_dir: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([*angora_exe, "web", "--port", str(port)], capture_output=True, text=True, timeout=60,
                             env=dict(angora_env, ANGORA_CONFIG=str(config_dir)))
    assert out.returncode != 0
    assert f"cannot serve on 127.0.0.1:{port}" in out.stderr and "in use" in out.stderr, out.stderr[-2000:]
    assert "Traceback" not in out.stderr


def test_angora_web_help_lists_options() -> None:
    out = subprocess.run([sys.executable, "-m", "angora_rq.cli", "web", "--help"], capture_output=True, text=True,
                         env=dict(os.environ), timeout=60)
    assert out.returncode == 0 and "--port" in out.stdout and "--host" in out.stdout and "--config" in out.stdout


def test_status_and_dashboard_warn_when_redis_would_evict_keys(make_app: MakeApp, r: redis.Redis) -> None:
    """A maxmemory-policy other than noeviction lets a full Redis delete Angora's keys: the status, the dashboard
    and /metrics say so."""
    assert conforms(make_app().test_client().get("/api/v1/status"), "/api/v1/status")["memory"]["warning"] is None
    old: Any = r.config_get("maxmemory-policy")["maxmemory-policy"]
    r.config_set("maxmemory-policy", "allkeys-lru")  # this session's own server, which has no maxmemory
    try:
        client = make_app().test_client()  # a new app: its first memory reading is of now
        memory = conforms(client.get("/api/v1/status"), "/api/v1/status")["memory"]
        html = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
        metrics = client.get("/metrics").get_data(as_text=True)
    finally:
        r.config_set("maxmemory-policy", old)
    assert old == "noeviction" and memory["policy"] == "allkeys-lru"
    assert "maxmemory-policy is allkeys-lru" in memory["warning"] and "set it to noeviction" in memory["warning"]
    assert 'id="eviction-warning"' in html and "maxmemory-policy is allkeys-lru" in html
    assert "\nangora_redis_evicting 1.0\n" in metrics, metrics

"""/metrics and per-job duration statistics: the pure counting, the reads (two round trips), the exposition after
real matcher and worker processes ran jobs (the same from any web process), the auth rules, the Grafana dashboard.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import redis
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.metrics import (Histogram, alive_by_role, bucket_bound, duration_stats, entry_age, histograms,
                                    percentile, status_counts)
from angora_rq.core.settings import Settings
from angora_rq.store.bus import submit
from angora_rq.store.metrics import read_sample
from angora_rq.store.queries import Queries
from angora_rq.web import create_app
from angora_testkit import System, running, wait_for

ROOT = Path(__file__).resolve().parents[2]


# -- pure ----------------------------------------------------------------------------------------------------

def test_a_duration_goes_to_the_smallest_bucket_it_fits() -> None:
    assert [bucket_bound(d) for d in (0.0, 0.01, 0.011, 0.5, 3599, 3600.5)] == [
        "0.01", "0.01", "0.05", "0.5", "3600.0", "+Inf"]


def test_stats_fields_read_back_as_histograms_and_counts() -> None:
    stats = {"h:succeeded:0.5": "2", "h:succeeded:+Inf": "1", "d:succeeded": "9000.5", "h:failed:0.01": "1",
             "d:failed": "0.003", "last_status": "failed", "succeeded": "4", "failed": "1", "total": "5"}
    h = histograms(stats)
    assert (h["succeeded"].count, h["succeeded"].total_seconds, h["failed"].count) == (3, 9000.5, 1)
    cumulative = dict(h["succeeded"].cumulative())
    assert (cumulative["0.25"], cumulative["0.5"], cumulative["3600.0"], cumulative["+Inf"]) == (0, 2, 2, 3)
    assert list(cumulative)[-1] == "+Inf" and len(cumulative) == 17
    assert status_counts(stats) == {"succeeded": 7, "failed": 2}  # the counts kept before histograms included
    assert Histogram().cumulative()[-1] == ("+Inf", 0)


def test_percentiles_and_success_over_the_history() -> None:
    assert percentile([], 50) is None and percentile([3.0], 95) == 3.0
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95)) == (50.0, 95.0)
    rows = [("succeeded", "1.0"), ("succeeded", "2.0"), ("failed", "10.0"), ("skipped", "3.0"), ("queued", ""),
            ("killed", "")]
    d = duration_stats(rows)
    assert (d.executions, d.finished, d.succeeded, d.p50, d.p95, d.success_rate) == (6, 4, 2, 2.0, 10.0, 0.5)
    assert duration_stats([]).to_json() == {"executions": 0, "finished": 0, "succeeded": 0, "success_rate": None,
                                            "p50": None, "p95": None}


def test_alive_processes_and_entry_ages() -> None:
    beats = {b"worker:a": b"100", b"worker:b": b"80", b"matcher:m": b"99.5", b"scheduler:s": b"x", b"junk": b"1"}
    assert alive_by_role(beats, 100.0) == {"worker": 1, "matcher": 1}
    assert entry_age("90000-3", 100.0) == 10.0 and entry_age(None, 100.0) == 0.0


# -- reads -----------------------------------------------------------------------------------------------------

class Counting:
    """A Redis client that counts round trips: pipelines executed and commands sent alone."""

    def __init__(self, r: redis.Redis) -> None:
        self.r, self.trips = r, 0

    def pipeline(self, *a: Any, **kw: Any) -> Any:
        pipe = self.r.pipeline(*a, **kw)
        execute = pipe.execute

        def counted(*ea: Any, **ekw: Any) -> Any:
            self.trips += 1
            return execute(*ea, **ekw)
        pipe.execute = counted  # type: ignore[method-assign]
        return pipe

    def __getattr__(self, name: str) -> Any:
        self.trips += 1
        return getattr(self.r, name)


def test_a_scrape_is_two_round_trips_however_many_jobs(r: redis.Redis, keys: Keys) -> None:
    submit(r, keys, Message.create("t.go"))
    for q in ("a", "b", "c"):
        r.rpush(keys.rq_queue(q), "x")
        r.sadd(K.RQ_QUEUES, keys.rq_queue(q))
    r.rpush(Keys("another").rq_queue("d"), "x")  # another deployment's queue on the same database: not shown
    r.sadd(K.RQ_QUEUES, Keys("another").rq_queue("d"))
    counting = Counting(r)
    sample = read_sample(counting, keys, [f"job{i}" for i in range(200)])  # type: ignore[arg-type]
    assert counting.trips == 2
    assert sample.stream_length == 1 and sample.oldest_entry is not None  # no matcher group: all unread
    assert sample.queued == {"a": 1, "b": 1, "c": 1} and len(sample.jobs) == 200
    assert sample.work == 1  # the message not dispatched yet: the work budget's count


# -- through real processes --------------------------------------------------------------------------------------

JOBS = """
- {name: ok1, triggers: [m.ok], command: "true", messages: [m.next]}
- {name: ok2, triggers: [m.next], command: [sleep, "0.3"]}
- {name: bad, triggers: [m.bad], command: "false", replay: 0}
- {name: held, triggers: [m.held], command: "true"}
- {name: parked, triggers: [m.parked], command: "true", queue: nobody}
"""


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    with running(angora_env, JOBS, tmp_path) as s:
        yield s


def app_for(s: System, **overrides: Any) -> Flask:
    settings = Settings.from_env(s.env)
    fields = {k: v for k, v in vars(settings).items()}
    fields.update(overrides)
    return create_app({"SETTINGS": Settings(**fields), "TESTING": True})


def scrape(app: Flask, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = app.test_client().get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.data
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for family in text_string_to_metric_families(resp.get_data(as_text=True)):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return m[(name, tuple(sorted(labels.items())))]


def test_metrics_count_what_the_processes_did(system: System) -> None:
    web = app_for(system)
    client = web.test_client()
    assert client.post("/api/v1/jobs/held/pause").status_code == 200
    runs = [system.send("m.ok") for _ in range(3)] + [system.send("m.bad")]
    for run_id in runs:
        system.wait_run(run_id)
    held = system.send("m.held")
    parked = system.send("m.parked")
    def status_of(run_id: str, job: str) -> str:
        return system.q.run(run_id)["jobs"].get(job, {}).get("status", "")

    wait_for(lambda: status_of(held, "held") == "held", what="the paused job's execution held")
    wait_for(lambda: status_of(parked, "parked") == "queued", what="the parked execution queued")
    assert client.post("/send", data=b"msg=bad..topic", content_type="application/x-www-form-urlencoded"
                       ).status_code == 400
    m = scrape(web)

    assert value(m, "angora_messages_total", origin="root") == 6
    assert value(m, "angora_messages_total", origin="job") == 3  # ok1 sent m.next three times
    assert value(m, "angora_messages_refused_total", reason="invalid") == 1
    assert value(m, "angora_executions_total", angora_job="ok1", status="succeeded") == 3
    assert value(m, "angora_executions_total", angora_job="bad", status="failed") == 1
    assert ("angora_executions_total", (("angora_job", "bad"), ("status", "succeeded"))) not in m
    count = value(m, "angora_execution_duration_seconds_count", angora_job="ok2", status="succeeded")
    assert count == 3 and value(m, "angora_execution_duration_seconds_sum", angora_job="ok2", status="succeeded") > 0
    buckets = sorted(((float(dict(k[1])["le"]), v) for k, v in m.items()
                      if k[0] == "angora_execution_duration_seconds_bucket" and dict(k[1])["angora_job"] == "ok2"))
    assert [v for _, v in buckets] == sorted(v for _, v in buckets) and buckets[-1] == (float("inf"), 3)
    assert value(m, "angora_executions_held", angora_job="held", reason="paused") == 1
    assert value(m, "angora_paused", kind="job") == 1
    assert value(m, "angora_queue_length", queue="nobody") == 1
    assert value(m, "angora_processes_alive", role="worker") == 1
    assert value(m, "angora_processes_alive", role="matcher") == 1
    assert value(m, "angora_backlog_budget") == Settings().backlog
    assert value(m, "angora_redis_memory_used_bytes") > 0 and value(m, "angora_redis_memory_budget_bytes") > 0
    assert value(m, "angora_redis_evicting") == 0
    # Counts live in Redis: another web process (another app) reads the same numbers.
    other = scrape(app_for(system))
    for name in ("angora_messages_total", "angora_executions_total", "angora_execution_duration_seconds_count"):
        assert {k: v for k, v in other.items() if k[0] == name} == {k: v for k, v in m.items() if k[0] == name}


def test_matcher_lag_and_the_scheduler_leader(system: System) -> None:
    from angora_rq.core.model import Config
    from angora_rq.processes.scheduler import Scheduler

    web = app_for(system, backlog=10)
    assert ("angora_scheduler_leader" not in {k[0] for k in scrape(web)})
    scheduler = Scheduler(system.r, system.keys, Settings(), lambda: Config(()), name="sched-1")
    scheduler.step()
    leader = [k for k in scrape(web) if k[0] == "angora_scheduler_leader"]
    assert leader == [("angora_scheduler_leader", (("holder", "sched-1"), ("token", "1")))]
    scheduler.resign()
    for p in system.procs.values():  # no matcher: what is sent waits
        p.terminate()
        p.wait(30)
    for _ in range(3):
        system.send("m.ok")
    m = scrape(web)
    assert value(m, "angora_stream_length") >= 3
    assert value(m, "angora_backlog_used_ratio") >= 0.3
    assert value(m, "angora_matcher_lag_seconds") >= 0  # the oldest undispatched message's age


def test_a_scrape_follows_the_apis_auth_and_its_own_token(system: System) -> None:
    def status(app: Flask, path: str = "/metrics", token: str = "") -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return app.test_client().get(path, headers=headers).status_code

    open_app = app_for(system)
    assert status(open_app) == 200
    api = app_for(system, auth_token="api-secret")
    assert (status(api), status(api, token="wrong"), status(api, token="api-secret")) == (401, 401, 200)
    resp = api.test_client().get("/metrics")
    assert resp.get_json()["error"] == "authentication required" and "WWW-Authenticate" in resp.headers
    both = app_for(system, auth_token="api-secret", metrics_token="scrape-secret")
    assert (status(both), status(both, token="scrape-secret"), status(both, token="api-secret")) == (401, 200, 200)
    assert status(both, "/api/v1/jobs", token="scrape-secret") == 401  # the scrape token opens /metrics alone
    scrape_only = app_for(system, metrics_token="scrape-secret")  # auth off, but a scrape token is set
    assert (status(scrape_only), status(scrape_only, token="scrape-secret")) == (401, 200)
    assert status(scrape_only, "/api/v1/jobs") == 200
    assert Settings.from_env({"ANGORA_METRICS_TOKEN": "t"}).metrics_token == "t"


def test_job_durations_in_the_api_and_on_the_job_page(system: System) -> None:
    runs = [system.send("m.ok") for _ in range(4)]
    for run_id in runs:
        system.wait_run(run_id)
    history = Queries(system.r, system.keys).job_durations("ok2")
    assert (history.executions, history.finished, history.succeeded) == (4, 4, 4)
    assert history.p50 is not None and history.p95 is not None and 0.3 <= history.p50 <= history.p95
    web = app_for(system)
    body = web.test_client().get("/api/v1/jobs/ok2").get_json()
    assert body["history"] == history.to_json() | {"p50": body["history"]["p50"], "p95": body["history"]["p95"]}
    assert body["history"]["success_rate"] == 1.0 and body["stats"]["total"] == 4
    page = web.test_client().get("/jobs/ok2").get_data(as_text=True)
    took = r"(\d{3} ms|\d\.\d\d s)"  # sleeps of 0.3 s and more
    assert re.search(rf'id="job-durations">p50 {took}, p95 {took},\s+100 % succeeded', page), page


def test_the_grafana_dashboard_queries_metrics_that_exist(system: System) -> None:
    dash = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
    text = app_for(system).test_client().get("/metrics").get_data(as_text=True)
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count")}
    exposed = {f.name + end for f in text_string_to_metric_families(text) for end in suffixes[f.type]}
    used = {name for panel in dash["panels"] for t in panel["targets"]
            for name in re.findall(r"angora_\w+", t["expr"])}
    used.discard("angora_job")  # the label
    assert used and used <= exposed, used - exposed
    assert len({p["id"] for p in dash["panels"]}) == len(dash["panels"])

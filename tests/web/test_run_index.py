"""Filtered run lists come from the run indexes (store/runindex.py): exact paging and totals, no page scans, and
runs that finish, reopen or vanish move between the indexes."""
# ruff: noqa: F811  (the fixtures imported from test_ui_pages are parameters of the tests below)
from __future__ import annotations

import time
from typing import Any

import redis
from flask.testing import FlaskClient

from angora_rq.core.schema import Exec, Run
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import Janitor
from angora_rq.store.runindex import RunIndex, Window
from test_ui_pages import Finish, app, client, config_dir, finish, run_job, settings  # noqa: F401 (fixtures)


def api_runs(client: FlaskClient, **query: Any) -> dict[str, Any]:
    resp = client.get("/api/v1/runs", query_string=query)
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()


def failed_run(client: FlaskClient, finish: Finish) -> str:
    started = run_job(client, "extract")  # replay: 0, so one failure fails the run
    finish(started["execution_id"], exit_code=1)
    return started["run_id"]


def succeeded_run(client: FlaskClient, finish: Finish, job: str = "report") -> str:
    started = run_job(client, job)  # no messages: the run ends with it
    finish(started["execution_id"])
    return started["run_id"]


def test_paging_a_status_filter_gives_each_run_once_and_the_right_total(client: FlaskClient, finish: Finish
                                                                        ) -> None:
    failed = []
    for i in range(12):
        if i % 3 == 0:
            failed.append(failed_run(client, finish))
        else:
            succeeded_run(client, finish)
    seen = [api_runs(client, status="failed", limit=1, offset=n)["runs"] for n in range(5)]
    assert [len(page) for page in seen] == [1, 1, 1, 1, 0]
    assert [page[0]["run_id"] for page in seen[:4]] == failed[::-1]  # newest first, each once
    assert all(page[0]["status"] == "failed" for page in seen[:4])
    assert api_runs(client, status="failed", limit=1)["total"] == 4
    assert api_runs(client, status="succeeded")["total"] == 8
    assert api_runs(client)["total"] == 12


def test_job_filter_and_both_filters(client: FlaskClient, finish: Finish) -> None:
    a = succeeded_run(client, finish, "report")
    b = succeeded_run(client, finish, "nightly_only")
    c = failed_run(client, finish)
    d = succeeded_run(client, finish, "nightly_only")
    by_job = api_runs(client, job="nightly_only")
    assert by_job["total"] == 2 and [x["run_id"] for x in by_job["runs"]] == [d, b]
    assert [x["run_id"] for x in api_runs(client, job="nightly_only", limit=1, offset=1)["runs"]] == [b]
    both = api_runs(client, job="report", status="succeeded")
    assert both["total"] == 1 and [x["run_id"] for x in both["runs"]] == [a]
    # `extract` failed in c; `report` was blocked by that failure there (upstream_failed): c counts for both jobs
    assert [x["run_id"] for x in api_runs(client, job="report", status="failed")["runs"]] == [c]
    assert api_runs(client, job="extract", status="succeeded")["total"] == 0


def test_live_statuses_and_time_bounds(client: FlaskClient, finish: Finish) -> None:
    done = succeeded_run(client, finish)
    waiting = run_job(client, "report")["run_id"]
    queued = api_runs(client, status="queued")
    assert queued["total"] == 1 and queued["runs"][0]["run_id"] == waiting
    assert api_runs(client, status="running")["total"] == 0
    assert api_runs(client, status="queued", since=time.time() + 60)["total"] == 0
    assert api_runs(client, status="succeeded", until=1)["total"] == 0
    assert api_runs(client, status="succeeded", since=1)["runs"][0]["run_id"] == done
    assert api_runs(client, status="no-such-status")["total"] == 0


def test_runs_move_when_they_reopen_and_end_again(client: FlaskClient, finish: Finish, r: redis.Redis,
                                                  keys: Keys) -> None:
    run_id = failed_run(client, finish)
    assert api_runs(client, status="failed")["total"] == 1
    xid = (r.hget(keys.run(run_id), "e:extract") or b"").decode()
    retry = client.post(f"/api/v1/executions/{xid}/retry").get_json()["execution_id"]
    assert api_runs(client, status="failed")["total"] == 0  # live again
    assert api_runs(client, status="queued")["runs"][0]["run_id"] == run_id
    finish(retry, exit_code=1)
    assert api_runs(client, status="failed")["total"] == 1
    skipped = client.post(f"/api/v1/executions/{retry}/skip")
    assert skipped.status_code == 200
    # skipping sends extract's message: the run is live until a matcher takes it
    assert api_runs(client, status="failed")["total"] == 0 and api_runs(client, status="running")["total"] == 1


def test_canceled_runs_are_canceling_then_canceled(client: FlaskClient, finish: Finish, r: redis.Redis,
                                                   keys: Keys) -> None:
    busy = run_job(client, "report")
    r.hset(keys.execution(busy["execution_id"]), mapping={Exec.status: "running", Exec.worker: "w1"})  # a worker has it
    waiting = run_job(client, "nightly_only")
    for started in (busy, waiting):
        assert client.post(f"/api/v1/runs/{started['run_id']}/cancel").status_code == 200
    # the waiting execution is dropped at once; the running one finishes first
    assert [x["run_id"] for x in api_runs(client, status="canceling")["runs"]] == [busy["run_id"]]
    assert [x["run_id"] for x in api_runs(client, status="canceled")["runs"]] == [waiting["run_id"]]
    finish(busy["execution_id"])
    assert api_runs(client, status="canceling")["total"] == 0
    assert api_runs(client, status="canceled")["total"] == 2


def test_a_settler_with_a_stale_read_leaves_the_run_unsettled(client: FlaskClient, finish: Finish,
                                                              r: redis.Redis, keys: Keys) -> None:
    index = RunIndex(r, keys)
    run_id = failed_run(client, finish)
    seen = (r.hget(keys.runs_unsettled(), run_id) or b"").decode()
    created = float(r.hget(keys.run(run_id), Run.created) or 0)
    r.hincrby(keys.runs_unsettled(), run_id, 1)  # reopened after the settler read it
    index._record([(run_id, seen, "failed", created)], {}, {run_id: created})  # what it would write from its read
    assert r.hexists(keys.runs_unsettled(), run_id) and r.zscore(keys.runs_by_status("failed"), run_id) is None
    index.settle()
    assert not r.hexists(keys.runs_unsettled(), run_id) and r.zscore(keys.runs_by_status("failed"), run_id)


def test_filtered_pages_read_only_their_runs(client: FlaskClient, finish: Finish, r: redis.Redis) -> None:
    """With every run settled, a filtered page reads the index and its own runs' hashes: not every run."""
    oldest_failed = failed_run(client, finish)
    for _ in range(40):
        succeeded_run(client, finish)
    api_runs(client, status="failed")  # settles everything

    def hgetalls() -> int:
        return int(r.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
    before = hgetalls()
    page = api_runs(client, status="failed", limit=5)
    assert [x["run_id"] for x in page["runs"]] == [oldest_failed]
    assert hgetalls() - before == 1


def test_settling_writes_each_index_once_per_chunk(client: FlaskClient, finish: Finish, r: redis.Redis,
                                                   keys: Keys) -> None:
    """Settling finished runs costs two reads per run (where it stands, then whole) and a fixed number of writes
    per chunk: one per index key, whatever the number of runs (it was five per run, a quarter of a job's commands)."""
    index = RunIndex(r, keys, chunk=100)
    index.settle()  # once per keyspace: the indexes are built (and this connection's scripts loaded)
    runs = [succeeded_run(client, finish) for _ in range(30)] + [failed_run(client, finish) for _ in range(10)]

    def commands() -> int:
        stats = r.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")
    before = commands()
    index.settle()
    spent = commands() - before - 1  # the INFO
    # reads: EXISTS, HSCAN, per run HMGET and HGETALL (two EVALSHAs: the states and the writes, and the plans'
    # HMGET); writes: per job a ZADD and the SADD, then per index a ZREM and a ZADD, the HMGET and HDEL of
    # `unsettled`.
    assert spent <= 2 * len(runs) + 20, spent
    assert r.zcard(keys.runs_by_status("succeeded")) == 30 and r.zcard(keys.runs_by_status("failed")) == 10
    assert not r.exists(keys.runs_unsettled())


def test_runs_from_before_the_indexes_are_indexed_once(client: FlaskClient, finish: Finish, r: redis.Redis,
                                                       keys: Keys) -> None:
    run_id = failed_run(client, finish)
    api_runs(client, status="failed")
    r.delete(keys.runs_unsettled(), keys.runs_by_status("failed"), keys.runs_index_built())
    assert RunIndex(r, keys).page(Window(), "failed", None) == (1, [run_id])


def test_a_vanished_run_leaves_the_unsettled_runs(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    run_id = run_job(client, "report")["run_id"]
    r.delete(keys.run(run_id))  # expired
    RunIndex(r, keys).settle()
    assert not r.hexists(keys.runs_unsettled(), run_id)


def test_a_settle_in_chunks_smaller_than_the_backlog_indexes_every_run(client: FlaskClient, finish: Finish,
                                                                          r: redis.Redis, keys: Keys) -> None:
    failed = [failed_run(client, finish) for _ in range(3)]
    succeeded = [succeeded_run(client, finish) for _ in range(4)]
    live = run_job(client, "report")["run_id"]  # started, not finished
    RunIndex(r, keys, chunk=2).settle()  # the janitor's chunks are small (SETTLE_CHUNK): several round trips
    assert r.zcard(keys.runs_by_status("failed")) == 3 and r.zcard(keys.runs_by_status("succeeded")) == 4
    assert [m.decode() for m in r.hkeys(keys.runs_unsettled())] == [live]
    assert api_runs(client, status="failed")["total"] == 3 and sorted(succeeded + failed + [live]) == sorted(
        run["run_id"] for run in api_runs(client, limit=100)["runs"])


def test_the_janitor_settles_and_trims_the_indexes(client: FlaskClient, finish: Finish, r: redis.Redis,
                                                   keys: Keys, settings: Settings) -> None:
    old = failed_run(client, finish)
    new = failed_run(client, finish)
    janitor = Janitor(r, keys, settings)
    janitor.step()
    assert r.hlen(keys.runs_unsettled()) == 0 and r.zcard(keys.runs_by_status("failed")) == 2
    r.zrem(keys.runs(), old)  # trimmed from the runs index (max_runs): the run indexes follow
    janitor.trim(time.time())
    assert [m.decode() for m in r.zrange(keys.runs_by_status("failed"), 0, -1)] == [new]
    assert [m.decode() for m in r.zrange(keys.runs_by_job("extract"), 0, -1)] == [new]

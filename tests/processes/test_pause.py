"""Pause and resume: jobs (held in order, released in order) and queues (workers take nothing), on real Redis;
then end to end: 100 messages arrive while a job is paused, none runs; resume, all run in order."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

from angora_rq.core import keys as K
from angora_rq.store import pausing
from angora_rq.core.errors import InvalidInput, NotFound
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.store.claiming import claim_call, claimed_ids
from angora_rq.store.link import Link
from angora_rq.core.settings import Settings
from angora_rq.store.state import State
from angora_rq.core.schema import Exec
from angora_testkit import fields

JOB = JobDef("load", ("data.ready",), ("true",), queue="etl")


def held(r: redis.Redis, keys: Keys, n: int, job: JobDef = JOB) -> list[str]:
    """What the matcher does for a paused job: n executions created `held` and listed in order."""
    state, ids = State(keys, Settings()), []
    with r.pipeline() as pipe:
        for i in range(n):
            msg = Message.create("data.ready", {"N": str(i)}, f"run{i}", origin="test")
            xid = state.create(pipe, job, msg, 1000.0 + i, status="held")
            pipe.rpush(keys.paused_held(job.name), xid)
            ids.append(xid)
        pipe.execute()
    return ids


def claim(r: redis.Redis, keys: Keys, queues: tuple[str, ...], n: int = 100) -> list[str]:
    """The worker's CLAIM call (what AngoraWorker._claim sends), returning the claimed ids."""
    reply = claim_call(keys, Settings(), "w1", queues, time.time(), n).run(Link(r))
    return claimed_ids(reply)


def field(r: redis.Redis, key: str, name: str) -> str:
    return fields(r, key).get(name, "")


def test_resume_queues_the_held_executions_in_order(r: redis.Redis, keys: Keys) -> None:
    assert pausing.pause_job(r, keys, "load") == {"job": "load", "paused": True, "changed": True}
    assert pausing.pause_job(r, keys, "load")["changed"] is False
    ids = held(r, keys, 5)
    assert r.llen(keys.rq_queue("etl")) == 0
    assert all(field(r, keys.execution(x), "status") == "held" for x in ids)
    assert field(r, keys.run("run0"), "s:load") == "held"
    assert pausing.paused(r, keys) == {"jobs": [{"name": "load", "held": 5}], "queues": []}

    out = pausing.resume_job(r, keys, "load")
    assert out == {"job": "load", "paused": False, "changed": True, "released": 5}
    assert [x.decode() for x in r.lrange(keys.rq_queue("etl"), 0, -1)] == ids
    assert r.sismember(K.RQ_QUEUES, keys.rq_queue("etl"))
    assert r.llen(keys.bell("etl")) >= 1  # idle workers of the queue wake at once
    assert not r.exists(keys.paused_held("load")) and not r.smembers(keys.paused_jobs())
    for x in ids:
        assert field(r, keys.execution(x), "status") == "queued"
        assert field(r, K.rq_job(x), "status") == "queued"
    assert field(r, keys.run("run3"), "s:load") == "queued"
    assert claim(r, keys, ("etl",)) == ids  # workers take them, in order


def test_a_held_execution_killed_while_paused_is_not_queued(r: redis.Redis, keys: Keys) -> None:
    pausing.pause_job(r, keys, "load")
    ids = held(r, keys, 3)
    r.hset(keys.execution(ids[1]), Exec.status, "killed")
    r.delete(keys.execution(ids[2]))  # expired
    assert pausing.resume_job(r, keys, "load")["released"] == 1
    assert [x.decode() for x in r.lrange(keys.rq_queue("etl"), 0, -1)] == ids[:1]


def test_resume_of_a_job_that_is_not_paused_changes_nothing(r: redis.Redis, keys: Keys) -> None:
    assert pausing.resume_job(r, keys, "load") == {"job": "load", "paused": False, "changed": False, "released": 0}


def test_a_paused_queue_gives_nothing_to_workers(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings())
    with r.pipeline() as pipe:
        xid = state.create(pipe, JOB, Message.create("data.ready", run_id="r1"), 1000.0)
        pipe.execute()
    assert pausing.pause_queue(r, keys, "etl")["changed"] is True
    assert pausing.paused(r, keys)["queues"] == [{"name": "etl", "waiting": 1}]
    assert claim(r, keys, ("etl", "default")) == []
    assert field(r, keys.execution(xid), "status") == "queued"
    r.delete(keys.bell("etl"))
    assert pausing.resume_queue(r, keys, "etl") == {"queue": "etl", "paused": False, "changed": True}
    assert r.llen(keys.bell("etl")) == 1
    assert claim(r, keys, ("etl",)) == [xid]


def test_names_are_checked() -> None:
    with pytest.raises(InvalidInput):
        pausing.check_queue("has space")
    with pytest.raises(InvalidInput):
        pausing.check_queue("")
    with pytest.raises(NotFound):
        pausing.check_job("nope", ["load"])
    assert pausing.check_job("load", ["load"]) == "load"
    assert pausing.check_job("anything", None) == "anything"


# -- end to end: real matcher and worker processes, the CLI and the API ------------------------------------

def cli(env: dict[str, str], *args: str) -> str:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "angora_rq.cli", *args], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_100_messages_held_while_paused_then_run_in_order(angora_env: dict[str, str], tmp_path: Path,
                                                          r: redis.Redis, keys: Keys) -> None:
    from angora_testkit import System, wait_for, write_config

    out = tmp_path / "order.txt"
    cfg = write_config(tmp_path / "config", f"""
        - name: record
          triggers: [ev.record]
          command: ["sh", "-c", "echo \\"$ANGORA_PARAM_N\\" >> {out}"]
        - {{name: marker, triggers: [ev.marker], command: "true"}}
    """)
    s = System(angora_env, cfg, tmp_path)
    env = s.env
    try:
        s.start("matcher")
        s.start("worker", "-c", "1")  # one at a time: the order they run in is the order they were queued in
        assert "job record paused" in cli(env, "pause", "record")
        runs = [s.send("ev.record", {"N": str(i)}) for i in range(100)]
        wait_for(lambda: r.llen(keys.paused_held("record")) == 100, 60, what=f"100 held ({s.logs()})")
        assert "record" in cli(env, "paused") and "100 held" in cli(env, "paused")
        # A later message for a job that is not paused, on the same queue and the same one-at-a-time worker: once
        # it has run, any record execution wrongly queued before it has run too.
        assert s.wait_run(s.send("ev.marker"), 60)["status"] == "succeeded"
        assert not out.exists()
        assert s.q.run(runs[0])["jobs"]["record"]["status"] == "held"
        assert "100 held execution(s) queued" in cli(env, "resume", "record")
        for run_id in runs:
            assert s.wait_run(run_id, 60)["status"] == "succeeded"
    finally:
        s.stop()
    assert out.read_text().split() == [str(i) for i in range(100)]
    assert "nothing is paused" in cli(env, "paused")


def test_pausing_does_not_stop_a_running_command_and_a_paused_queue_waits(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    from angora_testkit import System, wait_for, write_config

    gate = tmp_path / "gate"
    cfg = write_config(tmp_path / "config", f"""
        - name: slow
          triggers: [ev.slow]
          command: ["sh", "-c", "while [ ! -e {gate} ]; do sleep 0.05; done"]
        - name: quick
          triggers: [ev.quick]
          command: "true"
          queue: etl
        - {{name: marker, triggers: [ev.marker], command: "true"}}
    """)
    s = System(angora_env, cfg, tmp_path)
    try:
        s.start("matcher")
        s.start("worker", "-q", "default", "-q", "etl")
        slow = s.send("ev.slow")
        wait_for(lambda: s.q.run(slow)["jobs"].get("slow", {}).get("status") == "running", 30, what="slow running")
        cli(s.env, "pause", "slow")
        cli(s.env, "pause", "--queue", "etl")
        quick = s.send("ev.quick")
        wait_for(lambda: s.q.run(quick)["jobs"].get("quick", {}).get("status") == "queued", 30, what="quick queued")
        gate.touch()
        assert s.wait_run(slow)["status"] == "succeeded"  # paused after it started: it ran to its end
        # A later message on the worker's other queue: the claim that took it looked at etl after quick was queued.
        assert s.wait_run(s.send("ev.marker"))["status"] == "succeeded"
        assert s.q.run(quick)["jobs"]["quick"]["status"] == "queued"  # its queue is paused
        assert "queue etl resumed" in cli(s.env, "resume", "--queue", "etl")
        assert s.wait_run(quick)["status"] == "succeeded"
    finally:
        s.stop()


def test_api_pause_resume_and_the_paused_flag(redis_url: str, keys: Keys, tmp_path: Path, r: redis.Redis) -> None:
    from angora_rq.web import create_app

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "jobs.yml").write_text("- {name: load, triggers: [data.ready], command: 'true', queue: etl}\n")
    app = create_app({"SETTINGS": Settings(redis_url=redis_url, prefix=keys.prefix, config_path=cfg,
                                           data_dir=tmp_path / "data")})
    c = app.test_client()
    assert c.post("/api/v1/jobs/load/pause").get_json() == {"job": "load", "paused": True, "changed": True}
    assert c.get("/api/v1/jobs").get_json()["jobs"][0]["paused"] is True
    assert c.get("/api/v1/jobs/load").get_json()["paused"] is True
    assert c.post("/api/v1/jobs/missing/pause").status_code == 404
    held(r, keys, 3)
    assert c.get("/api/v1/paused").get_json() == {"jobs": [{"name": "load", "held": 3}], "queues": []}
    assert c.post("/api/v1/jobs/load/resume").get_json()["released"] == 3
    assert c.get("/api/v1/jobs/load").get_json()["paused"] is False
    assert c.post("/api/v1/queues/etl/pause").get_json() == {"queue": "etl", "paused": True, "changed": True}
    assert c.post("/api/v1/queues/no%20way/pause").status_code == 400
    assert c.get("/api/v1/paused").get_json()["queues"] == [{"name": "etl", "waiting": 3}]
    assert c.post("/api/v1/queues/etl/resume").get_json()["paused"] is False
    assert c.get("/api/v1/paused").get_json() == {"jobs": [], "queues": []}

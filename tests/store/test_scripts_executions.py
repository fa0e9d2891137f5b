"""CREATE, CLAIM, FINISH, RELEASE, PROMOTE, REAP and RESUME on the real redis-server, one script at a time.

Each script is called through its production call site (State, claim_call, Janitor's one-script methods,
pausing) or, where a case needs the same inputs twice, through its bind() directly; no worker or matcher runs.
"""
from __future__ import annotations

import json

import redis

from angora_rq.core import keys as K
from angora_rq.core.execution import CLAIM_WIDTH, Claimed
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.schema import Defs, Exec, Run
from angora_rq.core.settings import Settings
from angora_rq.core.codec import to_str_dict
from angora_rq.processes.janitor import Janitor, lost_claims
from angora_rq.store.claiming import claim_call, claimed_ids
from angora_rq.store import pausing
from angora_rq.store.dispatch import Dispatcher, Outgoing
from angora_rq.store.fence import still_ours
from angora_rq.store.link import Link
from angora_rq.store.scripts import REAP
from angora_rq.store.state import Finished, State, load_claimed
from angora_testkit import compact, fields

JOB = JobDef("load", ("data.ready",), ("true",), queue="etl", replay=0)
LIMITED = JobDef("one", ("go",), ("true",), queue="etl", concurrency=1)
SETTINGS = Settings(history=10)


class Done:
    """An Outcome-like result."""

    def __init__(self, code: int = 0) -> None:
        self.exit_code, self.signal, self.reason = code, None, "exit"
        self.started, self.ended, self.duration, self.tail = 1000.5, 1001.0, 0.5, "out\n"
        self.output = b""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


h = fields


def ids(r: redis.Redis, key: str) -> list[str]:
    return [x.decode() for x in r.lrange(key, 0, -1)]


def create(r: redis.Redis, keys: Keys, job: JobDef = JOB, run_id: str = "run1", now: float = 1000.0,
           **kw: object) -> str:
    with r.pipeline() as pipe:
        xid = State(keys, SETTINGS).create(pipe, job, Message.create(job.triggers[0], {"N": "1"}, run_id), now,
                                           **kw)  # type: ignore[arg-type]
        pipe.execute()
    return xid


def claim(r: redis.Redis, keys: Keys, queues: tuple[str, ...] = ("etl",), want: int = 10,
          worker: str = "w1") -> list[str]:
    reply = claim_call(keys, SETTINGS, worker, queues, 2000.0, want).run(Link(r))
    return claimed_ids(reply)


def redis_now(r: redis.Redis) -> float:
    """Redis' clock."""
    seconds, micros = r.time()
    return seconds + micros / 1e6


def finish(r: redis.Redis, keys: Keys, xid: str, worker: str = "w1", code: int = 0) -> str:
    ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
    with r.pipeline() as pipe:
        status = State(keys, SETTINGS).finalize(pipe, ex, Done(code), 3000.0, worker=worker)
        pipe.execute()
    return status


# -- CREATE ----------------------------------------------------------------------------------------------------

def test_create_queues_delays_or_holds_and_counts_each_in_its_run(r: redis.Redis, keys: Keys) -> None:
    queued = create(r, keys)
    before = redis_now(r)
    delayed = create(r, keys, status="delayed", delay=300.0, attempt=2, replay_of=queued)
    held = create(r, keys, status="held")
    assert ids(r, keys.rq_queue("etl")) == [queued] and r.llen(keys.bell("etl")) == 1
    [(member, due)] = r.zrange(keys.delayed(), 0, -1, withscores=True)
    # Due 300 s from now by Redis' clock, whatever the clock of the process that created it (`now` is 1000.0).
    assert member == delayed.encode() and before + 300 <= due <= redis_now(r) + 300
    assert [h(r, K.rq_job(x))["status"] for x in (queued, delayed, held)] == ["queued", "scheduled", "deferred"]
    assert all(compact(r, k) for x in (queued, delayed, held)
               for k in (keys.execution(x), K.rq_job(x)))  # compact: short fields and values
    ex = h(r, keys.execution(delayed))
    assert (ex["status"], ex["attempt"], ex["replay_of"], float(ex["delay_until"])) == ("delayed", "2", queued, due)
    run = h(r, keys.run("run1"))
    assert (run["active"], run["n:load"], run["s:load"], run["e:load"]) == ("3", "3", "held", held)
    assert h(r, keys.job_stats("load"))["last_execution"] == held


def test_create_in_a_run_sent_before_keeps_the_runs_own_fields(r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.run("run1"), mapping={Run.topic: "data.ready", Run.active: 1, Run.plan: "p"})
    create(r, keys)
    run = h(r, keys.run("run1"))
    assert (run["active"], run["topic"], run["plan"]) == ("2", "data.ready", "p")
    assert r.ttl(keys.run("run1")) == -1  # never expires by itself: history is trimmed by whole finished runs


def test_an_execution_refers_to_its_spec_recorded_once_per_version(r: redis.Redis, keys: Keys) -> None:
    a, b = create(r, keys, config_version="v1"), create(r, keys, config_version="v1")
    assert h(r, keys.execution(a))["config_version"] == "v1" and r.hlen(keys.definitions("v1")) == 1
    assert json.loads(r.hget(keys.definitions("v1"), Defs.job + "load")) == JOB.to_json()
    assert load_claimed(r, keys, b, to_str_dict(r.hgetall(keys.execution(b)))).spec == JOB
    assert r.zscore(keys.definitions_index(), "v1") == 1000.0
    # Without a version (a job outside loaded definitions), each distinct spec gets a version of its own.
    other = JobDef("load", ("data.ready",), ("false",), queue="etl", replay=0)
    c, d = create(r, keys), create(r, keys, job=other)
    vc, vd = (h(r, keys.execution(x))["config_version"] for x in (c, d))
    assert vc != vd and vc.startswith("~") and vd.startswith("~")
    assert load_claimed(r, keys, d, to_str_dict(r.hgetall(keys.execution(d)))).spec == other


# -- CLAIM -----------------------------------------------------------------------------------------------------

def test_claim_takes_queued_executions_in_order_and_marks_them_running(r: redis.Redis, keys: Keys) -> None:
    xs = [create(r, keys, run_id=f"run{i}") for i in range(3)]
    reply = claim_call(keys, SETTINGS, "w1", ("etl",), 2000.0, 2).run(Link(r))
    assert claimed_ids(reply) == xs[:2]
    assert len(reply) == 2 * CLAIM_WIDTH  # flat: no nested array (each costs Redis 6 a write(2) of its own)
    assert [x.decode() for x in reply[2:8]] == ["run0", "1", "data.ready", '{"N": "1"}', "etl", "1000.0"]
    assert json.loads(reply[1]) == JOB.to_json()
    first = Claimed.from_claim(reply[:CLAIM_WIDTH])
    version = h(r, keys.execution(xs[0]))["config_version"]
    assert (first.id, first.run, first.spec, first.version) == (xs[0], "run0", JOB, version)
    assert ids(r, keys.worker_inflight("w1")) == xs[:2] and ids(r, keys.rq_queue("etl")) == xs[2:]
    ex = h(r, keys.execution(xs[0]))
    assert (ex["status"], ex["worker"], ex["started"]) == ("running", "w1", "2000.0")
    rq = h(r, K.rq_job(xs[0]))
    assert (rq["status"], rq["worker_name"]) == ("started", "w1") and rq["started_at"]
    assert r.zscore(keys.rq_started("etl"), f"{xs[0]}:{xs[0]}") == 2000.0 + SETTINGS.default_timeout + 600
    assert h(r, keys.run("run0"))["s:load"] == "running"


def test_claim_run_twice_takes_nothing_more_and_starts_an_id_queued_twice_once(r: redis.Redis, keys: Keys) -> None:
    xid = create(r, keys)
    r.rpush(keys.rq_queue("etl"), xid)  # the same id twice in the queue (e.g. handed back while still queued)
    assert claim(r, keys) == [xid]
    assert claim(r, keys) == []
    assert ids(r, keys.worker_inflight("w1")) == [xid] and r.llen(keys.rq_queue("etl")) == 0


def test_claim_skips_paused_queues(r: redis.Redis, keys: Keys) -> None:
    etl = create(r, keys)
    other = create(r, keys, job=JobDef("x", ("go",), ("true",), queue="other"))
    r.sadd(keys.paused_queues(), "etl")
    assert claim(r, keys, ("etl", "other")) == [other]
    assert ids(r, keys.rq_queue("etl")) == [etl]


def test_no_queue_gets_an_execution_of_a_canceled_run(r: redis.Redis, keys: Keys) -> None:
    """CLAIM reads no run (cancel drops what waits): CREATE and HAND_BACK cancel an execution that would join a
    queue in a canceled run, once."""
    running = create(r, keys)
    r.sadd(keys.workers(), "w1")
    assert claim(r, keys) == [running]
    r.hset(keys.run("run1"), Run.canceled, "1")
    late = create(r, keys)  # e.g. a retry in the canceled run
    ex = load_claimed(r, keys, running, to_str_dict(r.hgetall(keys.execution(running))))
    with r.pipeline() as pipe:
        State(keys, SETTINGS).hand_back(pipe, ex, "w1", 3000.0)  # its worker stops before running it
        pipe.execute()
    assert claim(r, keys) == [] and r.llen(keys.rq_queue("etl")) == 0
    for xid in (running, late):
        assert h(r, keys.execution(xid))["status"] == "canceled" and h(r, K.rq_job(xid))["status"] == "canceled"
        assert r.zscore(keys.rq_canceled("etl"), xid) is not None or xid == late
    run = h(r, keys.run("run1"))
    assert (run["s:load"], run["active"]) == ("canceled", "0") and r.get(keys.work()) == b"0"
    assert ids(r, keys.worker_inflight("w1")) == [] and "started" not in h(r, keys.execution(running))


def test_hand_back_queues_an_execution_again_at_the_front(r: redis.Redis, keys: Keys) -> None:
    first, second = create(r, keys), create(r, keys, run_id="run2")
    assert claim(r, keys, want=1) == [first]
    ex = load_claimed(r, keys, first, to_str_dict(r.hgetall(keys.execution(first))))
    with r.pipeline() as pipe:
        State(keys, SETTINGS).hand_back(pipe, ex, "w1", 3000.0)
        pipe.execute()
    assert ids(r, keys.rq_queue("etl")) == [first, second] and ids(r, keys.worker_inflight("w1")) == []
    assert h(r, keys.execution(first))["status"] == "queued" and h(r, K.rq_job(first))["status"] == "queued"
    assert h(r, keys.run("run1"))["s:load"] == "queued" and r.zcard(keys.rq_started("etl")) == 0


def test_claim_drops_an_execution_killed_while_queued(r: redis.Redis, keys: Keys) -> None:
    xid = create(r, keys)
    r.hset(keys.execution(xid), Exec.status, "killed")
    assert claim(r, keys) == []
    assert h(r, keys.execution(xid))["status"] == "killed" and h(r, keys.run("run1"))["active"] == "1"


def test_claim_holds_an_execution_over_its_jobs_concurrency(r: redis.Redis, keys: Keys) -> None:
    first, second = create(r, keys, job=LIMITED), create(r, keys, job=LIMITED, run_id="run2")
    assert claim(r, keys) == [first]
    assert r.smembers(keys.slots("one")) == {first.encode()} and ids(r, keys.held("one")) == [second]
    assert h(r, keys.execution(second))["status"] == "held" and h(r, keys.run("run2"))["s:one"] == "held"


# -- FINISH and RELEASE ----------------------------------------------------------------------------------------

def test_finish_leaves_a_dead_workers_finished_executions_out_of_its_orphans(r: redis.Redis, keys: Keys) -> None:
    """FINISH takes the id off the worker's inflight list in the same transaction, so a worker killed right after
    finishing one execution has only the others replayed."""
    done, running = create(r, keys), create(r, keys, run_id="run2")
    r.sadd(keys.workers(), "w1")
    assert claim(r, keys) == [done, running]
    assert finish(r, keys, done) == "succeeded"
    assert ids(r, keys.worker_inflight("w1")) == [running]
    assert Janitor(r, keys, SETTINGS).reap_workers() == 1  # w1 has no alive key: dead
    assert ids(r, keys.orphans()) == [running]


def test_finish_records_a_failure_without_a_worker(r: redis.Redis, keys: Keys) -> None:
    xid = create(r, keys)
    r.rpush(keys.worker_inflight("w1"), "other")
    ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
    with r.pipeline() as pipe:
        assert State(keys, SETTINGS).finalize(pipe, ex, Done(2), 3000.0) == "failed"  # no worker: inflight ''
        pipe.execute()
    assert ids(r, keys.worker_inflight("w1")) == ["other"]
    assert r.zscore(keys.rq_failed("etl"), xid) == 3000.0 + int(SETTINGS.retention)
    stats = h(r, keys.job_stats("load"))
    # Counted per final status and duration bucket (0.5 s <= 0.5), durations summed per status: for /metrics.
    assert (stats["last_status"], stats["h:failed:0.5"], float(stats["d:failed"])) == ("failed", "1", 0.5)
    assert "h:succeeded:0.5" not in stats
    assert h(r, keys.run("run1"))["s:load"] == "failed"


def test_release_frees_the_slot_and_queues_the_oldest_held(r: redis.Redis, keys: Keys) -> None:
    xs = [create(r, keys, job=LIMITED, run_id=f"run{i}") for i in range(3)]
    assert claim(r, keys) == xs[:1]
    assert ids(r, keys.held("one")) == xs[1:]
    finish(r, keys, xs[0])
    assert r.smembers(keys.slots("one")) == set() and ids(r, keys.held("one")) == xs[2:]
    assert ids(r, keys.rq_queue("etl")) == [xs[1]]
    assert (h(r, keys.execution(xs[1]))["status"], h(r, K.rq_job(xs[1]))["status"]) == ("queued", "queued")
    assert h(r, keys.run("run1"))["s:one"] == "queued"
    assert claim(r, keys) == [xs[1]]


def test_release_with_nothing_held_only_frees_the_slot(r: redis.Redis, keys: Keys) -> None:
    xid = create(r, keys, job=LIMITED)
    assert claim(r, keys) == [xid]
    finish(r, keys, xid)
    assert not r.exists(keys.slots("one")) and r.llen(keys.rq_queue("etl")) == 0


# -- PROMOTE ---------------------------------------------------------------------------------------------------

def test_promote_queues_due_replays_once(r: redis.Redis, keys: Keys) -> None:
    before = redis_now(r)
    due = create(r, keys, status="delayed", delay=0.0)
    later = create(r, keys, status="delayed", delay=300.0)
    killed = create(r, keys, status="delayed", delay=0.0)
    r.hset(keys.execution(killed), Exec.status, "killed")
    janitor = Janitor(r, keys, SETTINGS)
    assert janitor.promote() == 2  # due by Redis' clock: no caller's `now` to get wrong
    assert janitor.promote() == 0  # the same call again: nothing is queued twice
    assert ids(r, keys.rq_queue("etl")) == [due]
    assert r.zrange(keys.delayed(), 0, -1) == [later.encode()]
    ex = h(r, keys.execution(due))
    assert (ex["status"], h(r, K.rq_job(due))["status"]) == ("queued", "queued")
    assert before + 300 <= float(h(r, keys.execution(later))["delay_until"]) <= redis_now(r) + 300  # Redis' clock
    assert h(r, keys.execution(killed))["status"] == "killed"
    assert r.sismember(K.RQ_QUEUES, keys.rq_queue("etl"))


# -- REAP ------------------------------------------------------------------------------------------------------

def reap(r: redis.Redis, keys: Keys, worker: str) -> int:
    return int(REAP.bind(alive=keys.worker_alive(worker), inflight=keys.worker_inflight(worker),
                         orphans=keys.orphans(), workers=keys.workers(), control=keys.worker_control(worker),
                         worker=worker).run(Link(r)))


def test_reap_leaves_a_live_worker_alone(r: redis.Redis, keys: Keys) -> None:
    r.sadd(keys.workers(), "w1")
    r.set(keys.worker_alive("w1"), 1)
    r.rpush(keys.worker_inflight("w1"), "a", "b")
    r.rpush(keys.worker_control("w1"), "kill a")
    assert reap(r, keys, "w1") == -1
    assert ids(r, keys.worker_inflight("w1")) == ["a", "b"] and not r.exists(keys.orphans())
    assert ids(r, keys.worker_control("w1")) == ["kill a"]


def test_reap_moves_a_dead_workers_executions_once(r: redis.Redis, keys: Keys) -> None:
    r.sadd(keys.workers(), "w1", "w2")
    r.rpush(keys.worker_inflight("w1"), "a", "b")
    r.rpush(keys.worker_control("w1"), "kill a", "wake")  # requests it will never read
    assert reap(r, keys, "w1") == 2
    assert reap(r, keys, "w1") == 0  # run twice (two janitors): no execution is orphaned twice
    assert ids(r, keys.orphans()) == ["a", "b"] and not r.exists(keys.worker_inflight("w1"))
    assert not r.exists(keys.worker_control("w1"))
    assert r.smembers(keys.workers()) == {b"w2"}


def test_lost_claims_finds_what_the_worker_does_not_know_and_drops_stale_entries(r: redis.Redis, keys: Keys) -> None:
    """A CLAIM whose reply was lost: the ids running under the worker that it does not know are found; those no
    longer running under it leave the inflight list (one LEAVE_INFLIGHT call), the others stay."""
    xs = [create(r, keys, run_id=f"run{i}") for i in range(4)]
    claim(r, keys)
    r.hset(keys.execution(xs[2]), Exec.status, "lost")
    r.hset(keys.execution(xs[3]), Exec.worker, "w2")
    assert [ex.id for ex in lost_claims(r, keys, "w1", known={xs[0]})] == [xs[1]]
    assert ids(r, keys.worker_inflight("w1")) == xs[:2]


# -- STILL_OURS (the guard of a worker's usual transaction of records) -------------------------------------------

def succeeded(r: redis.Redis, keys: Keys, state: State, pipe: object, xids: list[str], worker: str) -> Finished:
    """Finalize each claimed execution as succeeded into one worker batch (what the batch's record call writes)."""
    batch = Finished(worker, 3000.0)
    for xid in xids:
        ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
        state.finalize(pipe, ex, Done(), 3000.0, worker=worker, batch=batch)  # type: ignore[arg-type]
    return batch


def records(r: redis.Redis, keys: Keys, xids: list[str], worker: str = "w1") -> object:
    """A worker's transaction recording each execution as succeeded, guarded; None when Redis aborted it."""
    state = State(keys, SETTINGS)
    with r.pipeline() as pipe:
        batch = succeeded(r, keys, state, pipe, xids, worker)
        state.record(pipe, batch)  # the batch's one FINISH, inside the guarded transaction
        return Link(r).execute_then(pipe, None, still_ours(keys, worker, xids))[0]


def test_still_ours_lets_a_workers_records_through_while_every_execution_is_its_own(
        r: redis.Redis, keys: Keys) -> None:
    xs = [create(r, keys, run_id=f"run{i}") for i in range(2)]
    claim(r, keys)
    assert records(r, keys, xs) is not None
    assert [h(r, keys.execution(x))["status"] for x in xs] == ["succeeded", "succeeded"]


def test_still_ours_aborts_the_records_of_an_execution_a_janitor_took_meanwhile(r: redis.Redis, keys: Keys) -> None:
    """The worker stalled after reckoning its heartbeat alive; meanwhile a janitor recorded one execution lost
    and replayed it: nothing of the batch is written (the worker writes each end again, fenced)."""
    xs = [create(r, keys, run_id=f"run{i}") for i in range(2)]
    claim(r, keys)
    r.sadd(keys.workers(), "w1")
    assert reap(r, keys, "w1") == 2  # its heartbeat key is gone
    Janitor(r, keys, SETTINGS).replay_orphans(2500.0)
    lost = [h(r, keys.execution(x)) for x in xs]
    assert records(r, keys, xs) is None
    assert [h(r, keys.execution(x)) for x in xs] == lost  # untouched: still `worker lost`
    assert not [f for f in h(r, keys.job_stats("load")) if f.startswith("h:succeeded")]  # not counted either
    assert records(r, keys, xs, worker="w2") is None  # nor is anyone else's batch let through


# -- FINISH alone, guarded (a worker's batch with nothing else to write) ----------------------------------------

def finish_alone(r: redis.Redis, keys: Keys, xids: list[str], worker: str = "w1") -> int:
    """A worker's batch recording each execution as succeeded in one guarded FINISH: its reply (-1 = refused)."""
    state = State(keys, SETTINGS)
    with r.pipeline() as pipe:
        batch = succeeded(r, keys, state, pipe, xids, worker)
        assert not pipe.command_stack  # nothing but the records: the worker's one-call case
    return int(state.finish_call(batch, K.rq_worker(worker), guard=True).run(Link(r)))


def test_a_guarded_finish_records_a_workers_batch_and_its_rq_counters_in_one_call(
        r: redis.Redis, keys: Keys) -> None:
    xs = [create(r, keys, run_id=f"run{i}") for i in range(2)]
    claim(r, keys)
    assert finish_alone(r, keys, xs) == 2
    assert [h(r, keys.execution(x))["status"] for x in xs] == ["succeeded", "succeeded"]
    assert not r.exists(keys.worker_inflight("w1"))
    assert [h(r, keys.run(f"run{i}"))["s:load"] for i in range(2)] == ["succeeded", "succeeded"]
    runs = [h(r, keys.run(f"run{i}")) for i in range(2)]
    assert [(run["active"], float(run["ended"])) for run in runs] == [("0", 3000.0)] * 2  # ended (the same HSET)
    rq = h(r, K.rq_worker("w1"))
    assert rq["successful_job_count"] == "2" and "failed_job_count" not in rq and float(rq["total_working_time"]) > 0


def test_a_finish_of_many_ends_in_one_run_writes_the_run_in_parts_and_counts_it_once(
        r: redis.Redis, keys: Keys) -> None:
    """4,100 ends of one run in one FINISH: their 8,200 field values go to the run in parts (Redis' Lua unpacks
    about 8,000 values at most), and its count moves once, by -4,100, to its end."""
    xs = [create(r, keys) for _ in range(4100)]
    assert len(claim(r, keys, want=4100)) == 4100
    assert finish_alone(r, keys, xs) == 4100
    run = h(r, keys.run("run1"))
    assert (run["active"], float(run["ended"]), run["s:load"]) == ("0", 3000.0, "succeeded")
    assert r.get(keys.work()) == b"0"


def test_a_guarded_finish_writes_nothing_when_one_execution_is_no_longer_the_workers(
        r: redis.Redis, keys: Keys) -> None:
    """One of the batch was taken back by a janitor (gone from the inflight list) and replayed: nothing of the
    batch is written, and the other stays in the inflight list (the worker writes each end again, fenced)."""
    xs = [create(r, keys, run_id=f"run{i}") for i in range(2)]
    claim(r, keys)
    r.lrem(keys.worker_inflight("w1"), 1, xs[1])
    r.rpush(keys.orphans(), xs[1])
    Janitor(r, keys, SETTINGS).replay_orphans(2500.0)
    before = [h(r, keys.execution(x)) for x in xs]
    assert finish_alone(r, keys, xs) == -1
    assert [h(r, keys.execution(x)) for x in xs] == before
    assert ids(r, keys.worker_inflight("w1")) == [xs[0]]
    assert not [f for f in h(r, keys.job_stats("load")) if f.startswith("h:succeeded")]  # not counted either
    assert not r.exists(K.rq_worker("w1"))
    assert finish_alone(r, keys, xs[:1], worker="w2") == -1  # nor is anyone else's batch let through


def test_a_guarded_finish_of_a_larger_batch_reads_and_rewrites_the_inflight_list_once(
        r: redis.Redis, keys: Keys) -> None:
    """Three or more ends: one read of the inflight list and one rewrite, keeping what still runs; refused whole
    when one of them is not there any more."""
    xs = [create(r, keys, run_id=f"run{i}") for i in range(5)]
    claim(r, keys)
    r.lrem(keys.worker_inflight("w1"), 1, xs[3])  # taken back by a janitor meanwhile
    assert finish_alone(r, keys, xs[1:4]) == -1
    assert ids(r, keys.worker_inflight("w1")) == [xs[0], xs[1], xs[2], xs[4]]  # untouched
    assert [h(r, keys.execution(x))["status"] for x in xs] == ["running"] * 5
    assert finish_alone(r, keys, xs[1:3] + xs[4:]) == 3
    assert ids(r, keys.worker_inflight("w1")) == [xs[0]]  # still running: still the worker's
    assert [h(r, keys.execution(x))["status"] for x in xs] == ["running", "succeeded", "succeeded", "running",
                                                              "succeeded"]


def record_with_dispatch(r: redis.Redis, keys: Keys, xids: list[str], run_id: str) -> int:
    """A worker's batch recording each execution as succeeded, with the direct dispatch of one message of run
    `run_id` to JOB, in one RECORD call: its reply (-1 = refused)."""
    state = State(keys, SETTINGS)
    with r.pipeline() as pipe:
        batch = succeeded(r, keys, state, pipe, xids, "w1")
        assert not pipe.command_stack
    msg = Message("data.ready", {"N": "2"}, run_id, f"job:load:{xids[0]}", 3000.0)
    call, _ = Dispatcher(Link(r), keys, SETTINGS, "w1").direct(Outgoing([("", msg, "")], [(0, JOB)]), "v1", 3000.0)
    return int(state.record_call(batch, call, K.rq_worker("w1")).run(Link(r)))


def test_a_record_dispatches_what_the_batch_sends_then_finishes_it_in_one_call(r: redis.Redis, keys: Keys) -> None:
    [x] = [create(r, keys, run_id="run1")]
    claim(r, keys)
    assert record_with_dispatch(r, keys, [x], "run1") == 1
    assert h(r, keys.execution(x))["status"] == "succeeded" and not r.exists(keys.worker_inflight("w1"))
    [nxt] = ids(r, keys.rq_queue("etl"))
    assert h(r, keys.execution(nxt))["status"] == "queued" and h(r, keys.run("run1"))["active"] == "1"
    assert h(r, K.rq_worker("w1"))["successful_job_count"] == "1"


def test_a_record_writes_and_dispatches_nothing_when_an_execution_is_no_longer_the_workers(
        r: redis.Redis, keys: Keys) -> None:
    [x] = [create(r, keys, run_id="run1")]
    claim(r, keys)
    r.lrem(keys.worker_inflight("w1"), 1, x)  # taken back by a janitor (REAP) meanwhile
    before = h(r, keys.execution(x))
    assert record_with_dispatch(r, keys, [x], "run1") == -1
    assert h(r, keys.execution(x)) == before and ids(r, keys.rq_queue("etl")) == []
    assert h(r, keys.run("run1"))["active"] == "1"  # the execution still counts; no follow-up does
    assert not r.exists(K.rq_worker("w1"))


# -- RESUME ----------------------------------------------------------------------------------------------------

def test_resume_twice_queues_the_held_executions_once(r: redis.Redis, keys: Keys) -> None:
    pausing.pause_job(r, keys, "load")
    xs = [create(r, keys, run_id=f"run{i}", status="held") for i in range(3)]
    r.rpush(keys.paused_held("load"), *xs)
    r.hset(keys.execution(xs.pop()), Exec.status, "killed")  # killed while held: not queued
    assert pausing.resume_job(r, keys, "load")["released"] == 2
    assert pausing.resume_job(r, keys, "load") == {"job": "load", "paused": False, "changed": False, "released": 0}
    assert ids(r, keys.rq_queue("etl")) == xs and r.llen(keys.bell("etl")) == 1
    assert h(r, keys.run("run1"))["s:load"] == "queued"

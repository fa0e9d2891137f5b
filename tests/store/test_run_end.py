"""A run's end time (Run.ended) on the real redis-server: written by the script that takes its last piece out of
its count (FINISH, DISPATCH, a cancel's or a rejection's drop), never before; removed when a re-run of its failed
jobs makes it run again, and written anew when it ends again. The matcher, claims and finishes are the production
ones, run in this process; no worker runs.
"""
from __future__ import annotations

import time

import pytest
import redis

from angora_rq.commands.runner import Outcome
from angora_rq.core.codec import to_str_dict
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.schema import Run
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.processes.matcher import Matcher
from angora_rq.store.claiming import claim_call, claimed_ids
from angora_rq.store import bus
from angora_rq.store.control import Control
from angora_rq.store.link import Link
from angora_rq.store.queries import Queries
from angora_rq.store.state import State, load_claimed

A = JobDef("a", ("go",), ("true",), messages=("a.done",), replay=0)
B = JobDef("b", ("a.done",), ("true",), replay=0)
GATE = JobDef("gate", ("ask",), ("true",), approval=True)
SNAP = Snapshot(Config(jobs=(A, B, GATE), version="v1"))


class Flow:
    """Sends, dispatches, claims and finishes in one run, as the matcher and a worker would."""

    def __init__(self, r: redis.Redis, keys: Keys) -> None:
        self.r, self.keys = r, keys
        self.settings = Settings(prefix=keys.prefix)
        self.matcher = Matcher(r, keys, self.settings, lambda: SNAP, name="m")
        bus.ensure_group(r, keys)

    def send(self, topic: str, run_id: str) -> None:
        bus.send(self.r, self.keys, Message.create(topic, run_id=run_id))
        assert self.matcher.step(block_ms=10) == 1

    def run_one(self, code: int, at: float) -> str:
        """Claim the one queued execution and finish it with `code` at time `at`; returns its id."""
        [xid] = claimed_ids(claim_call(self.keys, self.settings, "w1", ("default",), at, 10).run(Link(self.r)))
        ex = load_claimed(self.r, self.keys, xid, to_str_dict(self.r.hgetall(self.keys.execution(xid))))
        with self.r.pipeline() as pipe:
            State(self.keys, self.settings).finalize(pipe, ex, Outcome(code, None, "exit", at - 1, at, 1.0, ""), at,
                                                     worker="w1")
            pipe.execute()
        return xid

    def ended(self, run_id: str) -> bytes | None:
        return self.r.hget(self.keys.run(run_id), Run.ended)


@pytest.fixture
def flow(r: redis.Redis, keys: Keys) -> Flow:
    return Flow(r, keys)


def test_a_chain_ends_when_its_last_execution_does_and_not_before(flow: Flow) -> None:
    flow.send("go", "r1")
    t1 = time.time() + 5
    flow.run_one(0, t1)  # a succeeded and sent a.done: b is still to come
    assert flow.ended("r1") is None
    view = Queries(flow.r, flow.keys).run("r1")
    assert view["status"] == "running" and (view["ended"], view["duration"]) == (None, None)
    assert flow.matcher.step(block_ms=10) == 1
    assert flow.ended("r1") is None  # b queued
    t2 = t1 + 3
    flow.run_one(0, t2)
    assert flow.ended("r1") == repr(t2).encode()
    view = Queries(flow.r, flow.keys).run("r1")
    assert view["status"] == "succeeded" and view["ended"] == t2
    assert view["duration"] == pytest.approx(t2 - view["created"])


def test_a_rerun_of_failed_jobs_clears_the_end_time_and_its_end_writes_it_again(flow: Flow) -> None:
    flow.send("go", "r1")
    t1 = time.time() + 5
    flow.run_one(0, t1)
    flow.matcher.step(block_ms=10)
    flow.run_one(1, t1 + 1)  # b fails: the run ends failed
    assert flow.ended("r1") == repr(t1 + 1).encode()
    assert Queries(flow.r, flow.keys).run("r1")["status"] == "failed"

    Control(flow.r, flow.keys, flow.settings).rerun_failed(SNAP, "r1")
    assert flow.ended("r1") is None  # running again (CREATE counted it in the ended run)
    view = Queries(flow.r, flow.keys).run("r1")
    assert view["status"] == "running" and (view["ended"], view["duration"]) == (None, None)

    t2 = t1 + 60
    flow.run_one(0, t2)
    assert flow.ended("r1") == repr(t2).encode()
    view = Queries(flow.r, flow.keys).run("r1")
    assert view["status"] == "succeeded" and view["duration"] == pytest.approx(t2 - view["created"])


def test_a_message_that_starts_nothing_ends_its_run_in_dispatch(flow: Flow) -> None:
    before = time.time()
    flow.send("nobody.listens", "r1")
    view = Queries(flow.r, flow.keys).run("r1")
    assert view["status"] == "succeeded" and view["ended"] is not None and view["ended"] >= before
    assert view["duration"] is not None and view["duration"] >= 0


def test_a_message_sent_to_an_ended_run_clears_its_end_time(flow: Flow) -> None:
    flow.send("nobody.listens", "r1")
    assert flow.ended("r1") is not None
    bus.send(flow.r, flow.keys, Message.create("go", run_id="r1"))  # SEND counts it in the run again
    assert flow.ended("r1") is None and Queries(flow.r, flow.keys).run("r1")["status"] != "succeeded"


@pytest.mark.parametrize("how", ["cancel", "reject", "hand_back"])
def test_dropping_the_last_waiting_execution_ends_the_run(flow: Flow, how: str) -> None:
    control = Control(flow.r, flow.keys, flow.settings)
    flow.send("ask" if how == "reject" else "go", "r1")
    assert flow.ended("r1") is None
    if how == "cancel":
        control.cancel_run("r1")  # the queued execution goes at once (Python's pipeline, RUN_COUNT)
    elif how == "reject":
        [xid] = flow.r.zrange(flow.keys.approvals(), 0, -1)
        control.decide(xid.decode(), False, "someone")  # DECIDE
    else:
        [xid] = claimed_ids(claim_call(flow.keys, flow.settings, "w1", ("default",), time.time(), 1)
                            .run(Link(flow.r)))
        control.cancel_run("r1")  # running: it stays until its worker hands it back, canceled (HAND_BACK)
        assert flow.ended("r1") is None
        ex = load_claimed(flow.r, flow.keys, xid, to_str_dict(flow.r.hgetall(flow.keys.execution(xid))))
        with flow.r.pipeline() as pipe:
            State(flow.keys, flow.settings).hand_back(pipe, ex, "w1", time.time())
            pipe.execute()
    view = Queries(flow.r, flow.keys).run("r1")
    assert view["status"] == ("failed" if how == "reject" else "canceled")
    assert view["ended"] is not None and view["duration"] is not None and view["duration"] >= 0


def test_a_run_recorded_without_an_end_time_has_none_and_a_running_one_ignores_an_old_one(r: redis.Redis,
                                                                                          keys: Keys) -> None:
    r.hset(keys.run("old"), mapping={Run.created: "1000.0", Run.active: "0", Run.topic: "go"})
    old = Queries(r, keys).run("old")
    assert old["status"] == "succeeded" and (old["ended"], old["duration"]) == (None, None)
    # A message a Python pipeline counted in an ended run leaves its old end time until it ends again.
    r.hset(keys.run("again"), mapping={Run.created: "1000.0", Run.active: "1", Run.ended: "1005.0"})
    assert (Queries(r, keys).run("again")["ended"], Queries(r, keys).run("again")["duration"]) == (None, None)
    r.hset(keys.run("again"), Run.active, "0")
    assert Queries(r, keys).run("again")["duration"] == 5.0

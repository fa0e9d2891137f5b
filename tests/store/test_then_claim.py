"""THEN_CLAIM (store/lua/then_claim.lua): a worker's guarded FINISH or RECORD and its next CLAIM in one call, on a
real Redis: what each part writes is what it wrote as two calls, and the claim runs whatever the first answered."""
from __future__ import annotations

import pytest
import redis

from angora_rq.core.execution import CLAIM_WIDTH
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.store.claiming import claim_call, claimed_ids
from angora_rq.store.dispatch import Dispatcher, Outgoing
from angora_rq.store.link import Link
from angora_rq.store.scripts import Bound, then_claim
from angora_rq.store.state import State
from test_scripts_executions import JOB, SETTINGS, claim, create, h, ids, succeeded


def ends(r: redis.Redis, keys: Keys, xids: list[str], dispatch_in: str = "") -> Bound:
    """A worker's guarded FINISH of `xids` as succeeded, or with `dispatch_in` (a run id) a RECORD that also
    dispatches one message of that run to JOB."""
    state = State(keys, SETTINGS)
    with r.pipeline() as pipe:
        batch = succeeded(r, keys, state, pipe, xids, "w1")
        assert not pipe.command_stack
    if not dispatch_in:
        return state.finish_call(batch, guard=True)
    msg = Message("data.ready", {"N": "2"}, dispatch_in, f"job:load:{xids[0]}", 3000.0)
    call, _ = Dispatcher(Link(r), keys, SETTINGS, "w1").direct(Outgoing([("", msg, "")], [(0, JOB)]), "v1", 3000.0,
                                                               spare=4)
    return state.record_call(batch, call)


def next_claim(keys: Keys) -> Bound:
    return claim_call(keys, SETTINGS, "w1", ("etl",), 3000.0, 4)


def test_a_finish_and_the_next_claim_in_one_call(r: redis.Redis, keys: Keys) -> None:
    first = create(r, keys, run_id="run1")
    claim(r, keys)
    waiting = create(r, keys, run_id="run2")
    reply = then_claim(ends(r, keys, [first]), next_claim(keys)).run(Link(r))
    assert reply[0] == 1 and claimed_ids(reply[1:]) == [waiting] and len(reply) == 1 + CLAIM_WIDTH
    assert h(r, keys.execution(first))["status"] == "succeeded"
    assert h(r, keys.execution(waiting))["status"] == "running"
    assert ids(r, keys.worker_inflight("w1")) == [waiting]


def test_the_claim_runs_when_the_finish_is_refused(r: redis.Redis, keys: Keys) -> None:
    """A janitor took the batch back meanwhile: nothing of it is written (-1), and the claim still takes work."""
    first = create(r, keys, run_id="run1")
    claim(r, keys)
    r.lrem(keys.worker_inflight("w1"), 1, first)
    before = h(r, keys.execution(first))
    waiting = create(r, keys, run_id="run2")
    reply = then_claim(ends(r, keys, [first]), next_claim(keys)).run(Link(r))
    assert reply[0] == -1 and claimed_ids(reply[1:]) == [waiting]
    assert h(r, keys.execution(first)) == before
    assert ids(r, keys.worker_inflight("w1")) == [waiting]


def test_a_record_and_the_claim_of_what_it_dispatched_in_one_call(r: redis.Redis, keys: Keys) -> None:
    """A workflow's step: the end, the direct dispatch of the message it sends and the claim of the execution that
    dispatch queued, with no bell rung (the claim that follows takes it)."""
    first = create(r, keys, run_id="run1")
    claim(r, keys)
    r.delete(keys.bell("etl"))  # (what creating the first rang)
    reply = then_claim(ends(r, keys, [first], dispatch_in="run1"), next_claim(keys)).run(Link(r))
    [nxt] = claimed_ids(reply[1:])
    assert reply[0] == 1 and nxt != first
    assert h(r, keys.execution(first))["status"] == "succeeded"
    assert h(r, keys.execution(nxt))["status"] == "running" and h(r, keys.run("run1"))["active"] == "1"
    assert ids(r, keys.rq_queue("etl")) == [] and not r.exists(keys.bell("etl"))
    assert ids(r, keys.worker_inflight("w1")) == [nxt]


def test_then_claim_takes_only_an_end_and_a_claim(r: redis.Redis, keys: Keys) -> None:
    with pytest.raises(ValueError):
        then_claim(next_claim(keys), next_claim(keys))

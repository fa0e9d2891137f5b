"""Events published by the batched scripts (FINISH, CLAIM, HAND_BACK) on real Redis, as webhooks receive them."""
from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.processes.redis_server import free_port
from angora_rq.store.claiming import claim_call
from angora_rq.store import bus
from angora_rq.store.bus import send, submit
from angora_rq.store.events import Events, write_wanted
from angora_rq.store.link import Link
from angora_rq.store.state import Finished, State, load_claimed
from angora_testkit import fields

LAST = JobDef("last", ("data.ready",), ("true",), queue="etl", replay=0)
SENDS = JobDef("load", ("data.ready",), ("true",), queue="etl", messages=("data.loaded",), replay=0)


class Done:
    """A command that exited 0."""

    exit_code, signal, reason, started, ended, duration, tail, ok = 0, None, "exit", 1.0, 1.5, 0.5, "", True
    output = b""


def listening(r: redis.Redis, keys: Keys, *topics: str) -> State:
    """A State whose events know that a webhook listens to `topics`."""
    r.hset(keys.events(), mapping={t: "w" for t in topics})
    return State(keys, Settings(), Events(r, keys))


def heard(r: redis.Redis, keys: Keys) -> list[dict[str, Any]]:
    """The events on the webhooks' outbox, oldest first."""
    return [json.loads(e) for e in reversed(r.lrange(keys.webhook_outbox(), 0, -1))]


def create(r: redis.Redis, keys: Keys, state: State, job: JobDef, run_id: str) -> str:
    with r.pipeline() as pipe:
        xid = state.create(pipe, job, Message.create("data.ready", None, run_id, origin="test"), 1000.0,
                           config_version="v1")
        pipe.execute()
    return xid


def test_one_finish_publishes_each_execution_and_each_run_that_ended_once(r: redis.Redis, keys: Keys) -> None:
    state = listening(r, keys, "angora.execution.succeeded", "angora.run.succeeded")
    a, b = create(r, keys, state, LAST, "r1"), create(r, keys, state, LAST, "r1")
    c = create(r, keys, state, SENDS, "r2")
    with r.pipeline() as pipe:
        batch = Finished("w1", 2000.0)
        for xid in (a, b, c):
            ex = load_claimed(r, keys, xid, _raw(r, keys, xid))
            state.finalize(pipe, ex, Done(), 2000.0, worker="w1", batch=batch)
        state.record(pipe, batch)  # one FINISH, queued after the message `load` sends
        pipe.execute()
    events = heard(r, keys)
    assert [(e["event"], e["execution_id"]) for e in events[:3]] == [
        ("angora.execution.succeeded", a), ("angora.execution.succeeded", b), ("angora.execution.succeeded", c)]
    # r1 ended with the batch: told once; r2 still counts the message its execution sent, so it has not ended.
    assert [(e["event"], e["run_id"]) for e in events[3:]] == [("angora.run.succeeded", "r1")]
    assert fields(r, keys.run("r2"))["active"] == "1"


def test_finish_publishes_nothing_when_nothing_listens(r: redis.Redis, keys: Keys) -> None:
    state = State(keys, Settings(), Events(r, keys))
    xid = create(r, keys, state, LAST, "r1")
    with r.pipeline() as pipe:
        state.finalize(pipe, load_claimed(r, keys, xid, _raw(r, keys, xid)), Done(), 2000.0)
        pipe.execute()
    assert fields(r, keys.execution(xid))["status"] == "succeeded" and r.llen(keys.webhook_outbox()) == 0


def test_claim_and_hand_back_publish_the_new_status(r: redis.Redis, keys: Keys) -> None:
    state = listening(r, keys, "angora.execution.running", "angora.execution.queued")
    xid = create(r, keys, state, LAST, "r1")
    assert heard(r, keys)[0]["execution_id"] == xid  # CREATE's own `queued`
    reply = claim_call(keys, Settings(), "w1", ("etl",), time.time(), 1, events=True).run(Link(r))
    assert reply[0].decode() == xid
    with r.pipeline() as pipe:
        state.hand_back(pipe, load_claimed(r, keys, xid, _raw(r, keys, xid)), "w1", time.time())
        pipe.execute()
    assert [(e["event"], e["status"]) for e in heard(r, keys)] == [
        ("angora.execution.queued", "queued"), ("angora.execution.running", "running"),
        ("angora.execution.queued", "queued")]
    assert fields(r, keys.execution(xid))["status"] == "queued"


def _raw(r: redis.Redis, keys: Keys, xid: str) -> dict[str, str]:
    """An execution's hash, decoded, fields under their Redis names (what load_claimed reads)."""
    return {k.decode(): v.decode() for k, v in r.hgetall(keys.execution(xid)).items()}


def test_send_looks_for_listeners_only_while_the_matcher_says_there_are_some(r: redis.Redis, keys: Keys) -> None:
    """A one-shot caller (`angora send`: submit with no copy of who listens) lets SEND look at `events:on`."""
    r.hset(keys.events(), "angora.run.started", "w")  # not through write_wanted: events_on is not set
    submit(r, keys, Message.create("data.ready", None, None, origin="test"))
    assert r.llen(keys.webhook_outbox()) == 0
    write_wanted(r, keys, {"angora.run.started": "w"})
    run = Message.create("data.ready", None, None, origin="test")
    submit(r, keys, run)
    assert [(e["event"], e["run_id"]) for e in heard(r, keys)] == [("angora.run.started", run.run_id)]
    write_wanted(r, keys, {})
    assert not r.exists(keys.events_on()) and not r.hexists(keys.events(), "angora.run.started")


def test_the_python_api_keeps_a_copy_of_who_listens_read_at_most_once_a_second(r: redis.Redis, keys: Keys) -> None:
    """send() in a process that sends many messages: who listens is its copy (store/events.Events), not a look of
    SEND's per run; a listener added meanwhile is heard once the copy is read again."""
    send(r, keys, Message.create("data.ready", None, None, origin="test"))  # the copy is read: nobody listens
    write_wanted(r, keys, {"angora.run.started": "w"})
    send(r, keys, Message.create("data.ready", None, None, origin="test"))
    assert r.llen(keys.webhook_outbox()) == 0  # the copy, under a second old, says nobody listens
    copy = bus._COPIES[(id(r.connection_pool), keys.prefix)]
    copy._read_at -= 1.0  # as a second later
    run = Message.create("data.ready", None, None, origin="test")
    send(r, keys, run)
    assert [(e["event"], e["run_id"]) for e in heard(r, keys)] == [("angora.run.started", run.run_id)]
    write_wanted(r, keys, {})


def test_send_takes_the_callers_copy_of_whether_anyone_listens(r: redis.Redis, keys: Keys) -> None:
    """A web process passes what its Events copy says (read at most once a second): SEND reads nothing then."""
    write_wanted(r, keys, {"angora.run.started": "w"})
    send(r, keys, Message.create("data.ready", None, None, origin="test"), listened=False)
    assert r.llen(keys.webhook_outbox()) == 0  # the caller's copy said nobody listens
    r.delete(keys.events_on())
    run = Message.create("data.ready", None, None, origin="test")
    send(r, keys, run, listened=True)  # the caller's copy is believed, whatever events_on says
    assert [(e["event"], e["run_id"]) for e in heard(r, keys)] == [("angora.run.started", run.run_id)]


ONE_AT_A_TIME = JobDef("load", ("data.ready",), ("true",), queue="etl", replay=0, concurrency=1)


def test_release_publishes_the_held_execution_it_queues(r: redis.Redis, keys: Keys) -> None:
    state = listening(r, keys, "angora.execution.held", "angora.execution.queued")
    first, second = create(r, keys, state, ONE_AT_A_TIME, "r1"), create(r, keys, state, ONE_AT_A_TIME, "r1")
    claim_call(keys, Settings(), "w1", ("etl",), time.time(), 2, events=True).run(Link(r))
    assert fields(r, keys.execution(second))["status"] == "held"  # the job's one slot is taken by `first`
    before = len(heard(r, keys))
    with r.pipeline() as pipe:
        state.finalize(pipe, load_claimed(r, keys, first, _raw(r, keys, first)), Done(), time.time(), worker="w1")
        pipe.execute()
    assert [(e["event"], e["execution_id"]) for e in heard(r, keys)[before:]] == [
        ("angora.execution.queued", second)]
    assert fields(r, keys.execution(second))["status"] == "queued"


def test_resume_publishes_each_execution_it_queues(r: redis.Redis, keys: Keys) -> None:
    from angora_rq.store.pausing import pause_job, resume_job

    state = listening(r, keys, "angora.execution.held", "angora.execution.queued")
    pause_job(r, keys, "last")
    with r.pipeline() as pipe:  # as DISPATCH holds what a paused job is sent
        xid = state.create(pipe, LAST, Message.create("data.ready", None, "r1", origin="test"), 1000.0,
                           config_version="v1", status="held")
        pipe.rpush(keys.paused_held("last"), xid)
        pipe.execute()
    before = len(heard(r, keys))
    assert resume_job(r, keys, "last")["released"] == 1
    assert [(e["event"], e["execution_id"]) for e in heard(r, keys)[before:]] == [("angora.execution.queued", xid)]


def test_promote_publishes_each_replay_it_queues(r: redis.Redis, keys: Keys) -> None:
    from angora_rq.processes.janitor import Janitor

    state = listening(r, keys, "angora.execution.delayed", "angora.execution.queued")
    with r.pipeline() as pipe:  # a replay whose backoff is already over, as finalize creates one
        xid = state.create(pipe, LAST, Message.create("data.ready", None, "r1", origin="test"), 1000.0,
                           config_version="v1", status="delayed", delay=0.0)
        pipe.execute()
    before = len(heard(r, keys))
    assert Janitor(r, keys, Settings()).promote() == 1  # due by Redis' clock
    assert [(e["event"], e["execution_id"]) for e in heard(r, keys)[before:]] == [("angora.execution.queued", xid)]


def test_a_background_copy_is_read_by_its_own_thread_only(r: redis.Redis, keys: Keys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The web's copy (Events(background=True)): a request thread never takes a pool connection to read who
    listens (each holds one for its request: waiting for a second deadlocked a pool of 16 under 64 clients)."""
    write_wanted(r, keys, {"angora.run.started": "w"})
    takers: list[str] = []
    take = r.connection_pool.get_connection

    def get_connection(*args: Any, **kwargs: Any) -> Any:
        takers.append(threading.current_thread().name)
        return take(*args, **kwargs)
    monkeypatch.setattr(r.connection_pool, "get_connection", get_connection)
    events = Events(r, keys, background=True)
    assert events.known() is True  # the first call waits (boundedly) for the thread's first read
    for _ in range(50):
        assert events.known() is True and "angora.run.started" in events.wanted()
    assert takers and set(takers) == {"angora-events"}


def test_a_background_copy_says_it_does_not_know_before_its_first_read(keys: Keys) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.05)
    events = Events(unreachable, keys, background=True)
    assert events.known() is None and events.wanted() == {}  # SEND then looks itself (listen '?')

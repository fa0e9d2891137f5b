"""A worker and Redis going away (issue 13): in this process, step by step, each failure made to happen on purpose.

The replies a worker loses are lost by a Link built here (the odd variant lives in the tests, not in the code);
an outage is a proxy that cuts the worker off (tcp_proxy.py).
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest
import redis

from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import Janitor
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.claiming import claim_call
from angora_rq.store.link import Link
from angora_rq.store.queries import Queries
from angora_rq.core.schema import Exec, Run
from angora_rq.store.state import State
from tcp_proxy import ResettingProxy

TRUE = JobDef("first", ("go",), ("true",), replay=0, messages=("next",))
NAP = JobDef("nap", ("go",), ("sleep", "0.5"), messages=("next",))


class LosingLink(Link):
    """A Link that loses the reply of its next `what` call ('script' or 'execute'); with `deliver` False the
    command never reaches Redis either."""

    def __init__(self, r: redis.Redis, what: str, deliver: bool) -> None:
        super().__init__(r)
        self.what, self.deliver, self.lost = what, deliver, 0

    def script(self, *args: Any, **kwargs: Any) -> Any:
        return self._maybe_lose("script", lambda: super(LosingLink, self).script(*args, **kwargs))

    def execute_then(self, *args: Any, **kwargs: Any) -> Any:
        return self._maybe_lose("execute", lambda: super(LosingLink, self).execute_then(*args, **kwargs))

    def _maybe_lose(self, what: str, call: Callable[[], Any]) -> Any:
        if what != self.what or self.lost:
            return call()
        self.lost += 1
        if self.deliver:
            call()
        raise redis.exceptions.ConnectionError("reply lost (test)")


@pytest.fixture
def settings(keys: Keys, tmp_path: Path) -> Settings:
    return Settings(prefix=keys.prefix, data_dir=tmp_path / "data")


@pytest.fixture
def proxy(redis_server: Any) -> Iterator[ResettingProxy]:
    p = ResettingProxy(redis_server.port).start()
    yield p
    p.close()


def queue(r: redis.Redis, keys: Keys, settings: Settings, job: JobDef, n: int = 1) -> list[str]:
    state = State(keys, settings)
    with r.pipeline() as pipe:
        ids = [state.create(pipe, job, Message.create("go", None, f"run{i}", origin="test"), time.time())
               for i in range(n)]
        pipe.execute()
    return ids


def status(r: redis.Redis, keys: Keys, xid: str) -> Optional[str]:
    raw = r.hget(keys.execution(xid), Exec.status)
    return raw.decode() if raw else None


def step_until(worker: AngoraWorker, done: Callable[[], Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        worker.step(max_wait=0.05)


def job_stats(r: redis.Redis, keys: Keys, job: str) -> dict[str, Any]:
    """The job's counters as the API shows them."""
    return Queries(r, keys).job_stats([job])[job]


def counted_once(r: redis.Redis, keys: Keys, xid: str, job: JobDef) -> None:
    """The end of `xid` is in Redis exactly once: its status, the job's counters, one follow-up message."""
    assert status(r, keys, xid) == "succeeded"
    stats = job_stats(r, keys, job.name)
    assert (stats["total"], stats["succeeded"]) == (1, 1)
    assert r.xlen(keys.stream()) == 1  # the job's one message
    assert r.llen(keys.worker_inflight("w1")) == 0


@pytest.mark.parametrize("deliver", [False, True], ids=["never-arrived", "reply-lost"])
def test_an_end_whose_record_fails_is_kept_and_counted_once(r: redis.Redis, keys: Keys, settings: Settings,
                                                            deliver: bool) -> None:
    """The transaction recording an end fails: before reaching Redis (the end must be kept and written again) or
    after Redis applied it (writing it again must not count it twice)."""
    (xid,) = queue(r, keys, settings, TRUE)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.link = worker.recorder.link = LosingLink(r, "execute", deliver)
    worker.start()
    try:
        step_until(worker, lambda: worker.link.lost and not worker.outbox)  # type: ignore[attr-defined]
    finally:
        worker.close()
    counted_once(r, keys, xid, TRUE)


def test_a_claim_whose_reply_was_lost_is_found_and_run(r: redis.Redis, keys: Keys, settings: Settings) -> None:
    (xid,) = queue(r, keys, settings, TRUE)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.link = worker.recorder.link = LosingLink(r, "script", deliver=True)
    worker.start()
    try:
        step_until(worker, lambda: status(r, keys, xid) == "succeeded")
    finally:
        worker.close()
    counted_once(r, keys, xid, TRUE)


def test_a_worker_that_leaves_hands_what_it_claimed_unknowingly_to_the_janitor(
        r: redis.Redis, keys: Keys, settings: Settings) -> None:
    """A CLAIM whose reply never came, then the worker stops before it could look: its name stays for the janitor,
    which replays the execution."""
    (xid,) = queue(r, keys, settings, NAP)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    worker.step(max_wait=0.0)
    claim_call(keys, settings, "w1", ("default",), time.time(), 1).run(Link(r))  # its reply lost on the way
    assert status(r, keys, xid) == "running"
    worker.close()
    Janitor(r, keys, settings).step(time.time())
    assert status(r, keys, xid) == "replaying"
    assert not r.sismember(keys.workers(), "w1")


def test_a_worker_taken_for_dead_does_not_record_what_the_janitor_replayed(
        r: redis.Redis, keys: Keys, settings: Settings) -> None:
    """Its heartbeat lapsed (Redis out of reach for longer than worker_ttl): the janitor recorded the execution as
    lost and replayed it. When the command ends, the worker must not record it a second time."""
    (xid,) = queue(r, keys, settings, NAP)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        step_until(worker, lambda: worker.active)
        r.delete(keys.worker_alive("w1"))  # the heartbeat expired
        Janitor(r, keys, settings).step(time.time())
        assert status(r, keys, xid) == "replaying"
        worker._last_beat = 0.0  # its next step beats (as it would, two seconds later)
        step_until(worker, lambda: not worker.active)
        for _ in range(3):
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    assert status(r, keys, xid) == "replaying"
    stats = job_stats(r, keys, NAP.name)
    assert (stats["total"], stats["failed"], stats["succeeded"]) == (1, 1, 0)
    assert r.xlen(keys.stream()) == 0  # attempt 1 sent nothing: its success was not recorded


def test_a_worker_whose_loop_stalls_keeps_its_heartbeat_and_runs_its_command_once(
        r: redis.Redis, keys: Keys, settings: Settings) -> None:
    """The loop stuck for three TTLs in a slow pass (a starved CPU) while its command ends: the heartbeat thread
    keeps the lease, so a janitor elsewhere replays nothing and the end is recorded once, by the worker."""
    settings = dataclasses.replace(settings, worker_ttl=2.0)
    (xid,) = queue(r, keys, settings, NAP)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    lapsed, stop = [], threading.Event()

    def elsewhere() -> None:  # another host's janitor, and a look at the lease, all along
        janitor = Janitor(r, keys, settings)
        while not stop.wait(0.1):
            lapsed.append(not r.exists(keys.worker_alive("w1")))
            janitor.step(time.time())

    try:
        step_until(worker, lambda: worker.active)
        watcher = threading.Thread(target=elsewhere)
        watcher.start()

        def slow_pass(now: Optional[float] = None, idle: bool = False) -> None:
            time.sleep(3 * settings.worker_ttl)

        worker.janitor.step = slow_pass  # type: ignore[method-assign]
        worker._last_beat = 0.0  # the next step does its housekeeping: the slow pass
        step_until(worker, lambda: not worker.active and not worker.outbox)
        stop.set()
        watcher.join()
    finally:
        stop.set()
        worker.close()
    assert lapsed and not any(lapsed)
    assert status(r, keys, xid) == "succeeded"
    stats = job_stats(r, keys, NAP.name)
    assert (stats["total"], stats["succeeded"]) == (1, 1)


def test_the_heartbeat_thread_does_not_keep_a_stuck_loop_alive(r: redis.Redis, keys: Keys,
                                                                settings: Settings) -> None:
    settings = dataclasses.replace(settings, worker_ttl=1.0)
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        worker.step(max_wait=0.0)
        assert r.exists(keys.worker_alive("w1"))
        worker.lease.loop_at = time.monotonic() - 1000  # its loop has not begun a step for long
        deadline = time.monotonic() + 30
        while r.exists(keys.worker_alive("w1")):
            assert time.monotonic() < deadline, "the lease never lapsed"
            time.sleep(0.1)
    finally:
        worker.close()


def test_a_worker_stopped_during_an_outage_leaves_its_ends_on_disk_for_the_next(
        proxy: ResettingProxy, redis_url: str, r: redis.Redis, keys: Keys, settings: Settings) -> None:
    through = redis.Redis.from_url(proxy.url + "/" + redis_url.rsplit("/", 1)[1], socket_connect_timeout=1)
    ids = queue(r, keys, settings, NAP, n=2)
    first = AngoraWorker(through, keys, settings, concurrency=2, name="w1", stop_grace=0.1)
    first.start()
    step_until(first, lambda: len(first.active) == 2)
    proxy.set_down(True)
    step_until(first, lambda: len(first.outbox) == 2)
    first.request_stop()
    step_until(first, first.done)
    first.close()
    spilled = list((settings.data_dir / "outcomes").rglob("*.jsonl"))
    assert len(spilled) == 1 and all(status(r, keys, x) == "running" for x in ids)
    proxy.set_down(False)
    second = AngoraWorker(r, keys, settings, concurrency=1, name="w2")
    second.start()
    try:
        step_until(second, lambda: all(status(r, keys, x) == "succeeded" for x in ids))
    finally:
        second.close()
    assert not spilled[0].exists()
    assert job_stats(r, keys, NAP.name)["total"] == 2 and r.xlen(keys.stream()) == 2
    assert [r.hget(keys.execution(x), Exec.attempt) for x in ids] == [b"1", b"1"]


def test_ends_are_kept_through_an_outage_and_recorded_when_redis_is_back(
        proxy: ResettingProxy, redis_url: str, r: redis.Redis, keys: Keys, settings: Settings) -> None:
    through = redis.Redis.from_url(proxy.url + "/" + redis_url.rsplit("/", 1)[1], socket_connect_timeout=1)
    ids = queue(r, keys, settings, NAP, n=2)
    worker = AngoraWorker(through, keys, settings, concurrency=2, name="w1")
    worker.start()
    try:
        step_until(worker, lambda: len(worker.active) == 2)
        proxy.set_down(True)
        step_until(worker, lambda: len(worker.outbox) == 2)
        for _ in range(5):
            worker.step(max_wait=0.05)  # still out of reach: kept, not dropped
        assert len(worker.outbox) == 2
        proxy.set_down(False)
        step_until(worker, lambda: not worker.outbox)
    finally:
        worker.close()
    assert all(status(r, keys, x) == "succeeded" for x in ids)
    assert job_stats(r, keys, NAP.name)["total"] == 2


# -- the matcher -----------------------------------------------------------------------------------------------------
def matcher(r: redis.Redis, keys: Keys, settings: Settings, *jobs: JobDef) -> Any:
    from angora_rq.core.model import Config
    from angora_rq.core.snapshot import Snapshot
    from angora_rq.processes.matcher import Matcher

    snap = Snapshot(Config(jobs=tuple(jobs), version="v1"))
    return Matcher(r, keys, settings, lambda: snap, name="me")


def test_dead_consumers_leave_the_group_once_nothing_is_pending(r: redis.Redis, keys: Keys,
                                                                 settings: Settings) -> None:
    from angora_rq.store import bus

    bus.ensure_group(r, keys)
    first, second = r.xadd(keys.stream(), {"x": "1"}), r.xadd(keys.stream(), {"x": "2"})
    r.xreadgroup(MATCHER_GROUP, "dead-with-pending", {keys.stream(): ">"}, count=1)
    r.xreadgroup(MATCHER_GROUP, "dead-idle", {keys.stream(): ">"}, count=1)
    m = matcher(r, keys, settings)
    r.xclaim(keys.stream(), MATCHER_GROUP, "me", 0, [second])  # what _claim_stale does with a dead one's entries
    time.sleep(0.3)
    r.xreadgroup(MATCHER_GROUP, "me", {keys.stream(): ">"})
    assert m.drop_dead_consumers(min_idle=0.2) == ["dead-idle"]
    names = {_s(c["name"]) for c in r.xinfo_consumers(keys.stream(), MATCHER_GROUP)}
    assert names == {"dead-with-pending", "me"}
    assert r.xpending(keys.stream(), MATCHER_GROUP)["pending"] == 2 and first
    assert m.drop_dead_consumers() == []  # the default waits a minute


def test_executions_are_created_after_the_read_that_brought_their_message(
        r: redis.Redis, keys: Keys, settings: Settings) -> None:
    import threading

    from angora_rq.store import bus

    m = matcher(r, keys, settings, TRUE)
    bus.ensure_group(r, keys)
    m.step(block_ms=10)  # housekeeping and the first reads out of the way
    sent: list[Message] = []

    def send_late() -> None:
        sent.append(Message.create("go", None, "late", origin="test"))
        bus.send(r, keys, sent[0])

    threading.Timer(0.3, send_late).start()
    assert m.step(block_ms=5000) == 1
    msg = sent[0]
    (xid,) = [f.decode()[len(Run.execution):] for f in r.hkeys(keys.run("late")) if f.startswith(b"x:")]
    assert float(r.hget(keys.execution(xid), Exec.created)) >= msg.sent_at


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)

"""Writes of executions, runs and job statistics: one pipeline per step (see docs/design.md)."""
from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from redis.client import Pipeline

from angora_rq.core import keys as K
from angora_rq.store.bus import send_in
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, new_execution_id
from angora_rq.core.model import JobDef
from angora_rq.core.rqcompat import job_mapping, utc_iso
from angora_rq.store.scripts import CREATE, FINISH, SETTLE_REPLAYED
from angora_rq.core.settings import Settings

TAIL_LIMIT = 65536
BELL_CAP = 64
HOST = socket.gethostname()


class OutcomeLike(Protocol):
    """What finalize needs of a finished command (runner.Outcome has it)."""

    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[int]: ...
    @property
    def reason(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def ended(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def tail(self) -> str: ...
    @property
    def ok(self) -> bool: ...


@dataclass
class Claimed:
    """An execution a worker has claimed: what it needs to run and finalize it."""

    id: str
    spec: JobDef
    run: str
    attempt: int
    topic: str
    params: dict[str, str]
    queue: str
    created: float

    @classmethod
    def from_claim(cls, id_: Any, spec: Any, fields: list) -> "Claimed":
        """Build from the CLAIM script's reply for one execution."""
        run, attempt, topic, params, queue, created = (_s(f) for f in fields)
        return cls(
            id=_s(id_),
            spec=_spec(_s(spec)),
            run=run,
            attempt=int(attempt or 1),
            topic=topic,
            params=json.loads(params) if params else {},
            queue=queue,
            created=float(created or 0),
        )


_specs: dict[str, JobDef] = {}


def _spec(text: str) -> JobDef:
    """The JobDef of a stored spec; parsed once per distinct text (every execution of a job version shares it)."""
    job = _specs.get(text)
    if job is None:
        if len(_specs) > 4096:
            _specs.clear()
        job = _specs[text] = JobDef.from_json(json.loads(text))
    return job


def spec_json(job: JobDef) -> str:
    """A job's spec as stored with each execution (the worker parses each distinct text once)."""
    return json.dumps(job.to_json())


def replay_allowed(spec: JobDef, attempt: int) -> bool:
    """Whether a failed attempt (1-based) may run again: `replay` None = always, N = N more attempts."""
    return spec.replay is None or attempt <= spec.replay


def replay_delay(spec: JobDef, attempt: int, cap: float) -> float:
    """Backoff before the next attempt: replay_delay doubling per attempt, capped."""
    return min(cap, spec.replay_delay * (2 ** max(0, attempt - 1)))


class State:
    """Executions, runs and job stats in Redis, under one key prefix."""

    def __init__(self, keys: Keys, settings: Settings) -> None:
        self.keys = keys
        self.settings = settings
        self._specs: dict[tuple[str, str], str] = {}

    def _spec_json(self, job: JobDef, version: str) -> str:
        """A job's spec as stored with each execution; cached per (job, definitions version) on the hot path."""
        if not version:
            return spec_json(job)
        key = (job.name, version)
        text = self._specs.get(key)
        if text is None:
            if len(self._specs) > 10_000:
                self._specs.clear()
            text = self._specs[key] = spec_json(job)
        return text

    # -- creating executions ----------------------------------------------------------------------
    def create(
        self,
        pipe: Pipeline,
        job: JobDef,
        msg: Message,
        now: float,
        *,
        entry: str = "",
        config_version: str = "",
        attempt: int = 1,
        replay_of: str = "",
        delay_until: float = 0.0,
        status: str = "queued",
    ) -> str:
        """Create an execution and its RQ job; queue it unless delayed or held. Counts it in its run."""
        k, ttl = self.keys, int(self.settings.retention)
        xid = new_execution_id()
        fields = {
            "id": xid, "job": job.name, "run": msg.run_id, "attempt": attempt, "status": status,
            "queue": job.queue, "topic": msg.topic, "entry": entry, "origin": msg.origin,
            "params": json.dumps(msg.params), "spec": self._spec_json(job, config_version),
            "config_version": config_version, "created": repr(now), "queued": repr(now),
            "replay_of": replay_of, "delay_until": repr(delay_until) if delay_until else "",
            "limit": job.concurrency or 0,
        }
        description = f"{job.name} (run {msg.run_id}, attempt {attempt})"
        rq_status = {"queued": "queued", "delayed": "scheduled"}.get(status, "deferred")
        rq_fields = job_mapping(xid, k.prefix, job.queue, description,
                                job.timeout or self.settings.default_timeout, ttl, now, rq_status)
        args: list[Any] = [
            k.execution(xid), K.rq_job(xid), k.run(msg.run_id), k.job_executions(job.name),
            k.run_executions(msg.run_id), k.job_stats(job.name), K.rq_queue(job.queue), k.bell(job.queue),
            k.delayed(), K.RQ_QUEUES, ttl, self.settings.history, repr(now), xid, job.name, msg.run_id, status,
            repr(delay_until), BELL_CAP, len(fields), len(rq_fields),
        ]
        for mapping in (fields, rq_fields):
            for name, value in mapping.items():
                args += (name, value)
        pipe.eval(CREATE, 0, *args)
        pipe.hincrby(k.runs_unsettled(), msg.run_id, 1)  # the run is live (again): the run indexes must look at it
        return xid

    def enqueue(self, pipe: Pipeline, xid: str, queue: str, at_front: bool = False) -> None:
        """Put an execution's RQ job in its queue and ring the queue's bell for idle workers."""
        qkey = K.rq_queue(queue)
        (pipe.lpush if at_front else pipe.rpush)(qkey, xid)
        pipe.sadd(K.RQ_QUEUES, qkey)
        bell = self.keys.bell(queue)
        pipe.rpush(bell, 1)
        pipe.ltrim(bell, 0, BELL_CAP - 1)

    # -- finishing executions ---------------------------------------------------------------------
    def finalize(
        self,
        pipe: Pipeline,
        ex: Claimed,
        outcome: OutcomeLike,
        now: float,
        worker: str = "",
        pid: int = 0,
    ) -> str:
        """Record a finished command: status, counters, RQ registries, messages or a replay. Returns the status."""
        spec = ex.spec
        ok = outcome.ok
        replay = not ok and outcome.reason != "killed" and replay_allowed(spec, ex.attempt)
        status = "succeeded" if ok else "killed" if outcome.reason == "killed" else "replaying" if replay else "failed"
        if spec.concurrency:
            self._release(pipe, ex)  # before the record: this execution's status is the run's latest for its job
        self._record(pipe, ex, outcome, status, pid, worker, now)
        if ex.attempt > 1:
            self.settle_replayed(pipe, ex.id)
        if ok:
            for topic in spec.messages:
                send_in(pipe, self.keys, Message(topic, ex.params, ex.run, f"job:{spec.name}:{ex.id}", now))
        elif replay:
            self._replay(pipe, ex, now)
        return status

    def _record(self, pipe: Pipeline, ex: Claimed, outcome: OutcomeLike, status: str, pid: int, worker: str,
                now: float) -> None:
        """The execution's result, its RQ job and registries, the run's status and count, the job's stats."""
        k, ttl, ok = self.keys, int(self.settings.retention), outcome.ok
        fields = {
            "status": status,
            "exit_code": "" if outcome.exit_code is None else outcome.exit_code,
            "signal": outcome.signal or "",
            "reason": outcome.reason,
            "started": repr(outcome.started),
            "ended": repr(outcome.ended),
            "duration": f"{outcome.duration:.6f}",
            "tail": outcome.tail[-TAIL_LIMIT:],
            "pid": pid or "",
        }
        args: list[Any] = [
            k.execution(ex.id), K.rq_job(ex.id), k.run(ex.run), k.job_stats(ex.spec.name),
            k.worker_inflight(worker) if worker else "", K.rq_started(ex.queue),
            (K.rq_finished if ok else K.rq_failed)(ex.queue), ttl, ex.id, status, ex.spec.name, "1" if ok else "0",
            "finished" if ok else "failed", utc_iso(now), now + ttl, fields["started"], fields["ended"],
            fields["duration"], len(fields),
        ]
        for name, value in fields.items():
            args += (name, value)
        pipe.eval(FINISH, 0, *args)

    def settle_replayed(self, pipe: Pipeline, xid: str) -> None:
        """The attempt `xid` replays is `failed` now, no longer `replaying`: its replay has had its turn."""
        pipe.eval(SETTLE_REPLAYED, 1, self.keys.execution(xid), self.keys.execution(""))

    def _release(self, pipe: Pipeline, ex: Claimed) -> None:
        from angora_rq.store.scripts import RELEASE

        k = self.keys
        pipe.eval(RELEASE, 3, k.slots(ex.spec.name), k.held(ex.spec.name), K.RQ_QUEUES,
                  ex.id, k.execution(""), K.rq_job(""), K.rq_queue(""), k.run(""))
        # The released execution (same job, same queue) may go to any idle worker, not only to this one.
        bell = k.bell(ex.queue)
        pipe.rpush(bell, 1)
        pipe.ltrim(bell, 0, BELL_CAP - 1)

    def _replay(self, pipe: Pipeline, ex: Claimed, now: float) -> None:
        delay = replay_delay(ex.spec, ex.attempt, self.settings.replay_max_delay)
        msg = Message(ex.topic, ex.params, ex.run, f"replay:{ex.id}", now)
        nxt = self.create(pipe, ex.spec, msg, now, attempt=ex.attempt + 1, replay_of=ex.id,
                          delay_until=now + delay, status="delayed")
        pipe.hset(self.keys.execution(ex.id), "next", nxt)
        # create() counted the new attempt; the failed one is still `replaying` until it runs.
        pipe.hset(self.keys.run(ex.run), f"s:{ex.spec.name}", "replaying")

    def hand_back(self, pipe: Pipeline, ex: Claimed, worker: str) -> None:
        """Return a claimed execution to the front of its queue unrun (worker stopping); the attempt is not spent."""
        k = self.keys
        pipe.hset(k.execution(ex.id), mapping={"status": "queued", "started": "", "worker": "", "host": ""})
        pipe.hset(K.rq_job(ex.id), mapping={"status": "queued", "started_at": "", "worker_name": ""})
        pipe.zrem(K.rq_started(ex.queue), f"{ex.id}:{ex.id}")
        pipe.hset(k.run(ex.run), f"s:{ex.spec.name}", "queued")
        pipe.lrem(k.worker_inflight(worker), 1, ex.id)
        if ex.spec.concurrency:
            pipe.srem(k.slots(ex.spec.name), ex.id)
        self.enqueue(pipe, ex.id, ex.queue, at_front=True)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else ("" if v is None else str(v))

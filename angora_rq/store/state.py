"""Writes of executions, runs and job statistics: one pipeline per step (see docs/design.md)."""
from __future__ import annotations

import json
import socket
from typing import Any

from redis.client import Pipeline

from angora_rq.core.execution import Claimed, OutcomeLike, final_status, replay_delay, spec_json
from angora_rq.core import keys as K
from angora_rq.store.bus import send_in
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, new_execution_id
from angora_rq.core.model import JobDef
from angora_rq.core.rqcompat import job_mapping, utc_iso
from angora_rq.store.scripts import CREATE, FINISH
from angora_rq.core.settings import Settings

TAIL_LIMIT = 65536
BELL_CAP = 64
HOST = socket.gethostname()


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
        status = final_status(ex, outcome)
        if spec.concurrency:
            self._release(pipe, ex)  # before the record: this execution's status is the run's latest for its job
        self._record(pipe, ex, outcome, status, pid, worker, now)
        if status == "succeeded":
            for topic in spec.messages:
                send_in(pipe, self.keys, Message(topic, ex.params, ex.run, f"job:{spec.name}:{ex.id}", now))
        elif status == "replaying":
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

"""Writes of executions, runs and job statistics: one pipeline per step (see docs/design.md)."""
from __future__ import annotations

import json
import socket
import time
from typing import Iterable, Optional

from redis.client import Pipeline

from angora_rq.core.execution import (Claimed, OutcomeLike, failure_params, final_status, replay_delay, spec_json,
                                      take_outputs)
from angora_rq.core import keys as K
from angora_rq.store.bus import send_in
from angora_rq.store.events import Events
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, new_execution_id
from angora_rq.core.metrics import bucket_bound
from angora_rq.core.model import JobDef
from angora_rq.core.rqcompat import job_mapping, utc_iso
from angora_rq.core.schema import Exec, RqJob, RqStatus, Run, Status
from angora_rq.store.scripts import CREATE, FINISH, RELEASE, SETTLE_REPLAYED, field_pairs
from angora_rq.core.settings import Settings

TAIL_LIMIT = 65536
BELL_CAP = 64
HOST = socket.gethostname()


def host_of(settings: Settings) -> str:
    """This host's name as executions record it: ANGORA_HOST, else the hostname."""
    return settings.host or HOST


class State:
    """Executions, runs and job stats in Redis, under one key prefix."""

    def __init__(self, keys: Keys, settings: Settings, events: Optional[Events] = None) -> None:
        self.keys = keys
        self.settings = settings
        self.events = events or Events(None, keys)  # None: this State publishes no event
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
        delay: float = 0.0,
        status: str = Status.queued,
    ) -> str:
        """Create an execution and its RQ job; queue it unless delayed (for `delay` s of Redis' clock), held or
        awaiting approval (then until the job's approval_timeout). Counts it in its run."""
        k, ttl = self.keys, int(self.settings.retention)
        xid = new_execution_id()
        fields = {
            Exec.id: xid, Exec.job: job.name, Exec.run: msg.run_id, Exec.attempt: attempt, Exec.status: status,
            Exec.queue: job.queue, Exec.topic: msg.topic, Exec.entry: entry, Exec.origin: msg.origin,
            Exec.params: json.dumps(msg.params), Exec.spec: self._spec_json(job, config_version),
            Exec.config_version: config_version, Exec.created: repr(now), Exec.queued: repr(now),
            Exec.replay_of: replay_of, Exec.delay_until: "",
            Exec.limit: job.concurrency or 0,
        }
        description = f"{job.name} (run {msg.run_id}, attempt {attempt})"
        rq_status = {Status.queued: RqStatus.queued, Status.delayed: RqStatus.scheduled}.get(status, RqStatus.deferred)
        rq_fields = job_mapping(xid, k.prefix, k.rq_name(job.queue), description,
                                job.timeout or self.settings.default_timeout, ttl, now, rq_status)
        CREATE.bind(
            exec=k.execution(xid), rq_job=K.rq_job(xid), run=k.run(msg.run_id), job_execs=k.job_executions(job.name),
            run_execs=k.run_executions(msg.run_id), stats=k.job_stats(job.name), rq_queue=k.rq_queue(job.queue),
            bell=k.bell(job.queue), delayed=k.delayed(), rq_queues=K.RQ_QUEUES, work=k.work(), approvals=k.approvals(),
            ttl=ttl,
            history=self.settings.history, now=repr(now), id=xid, job=job.name, run_id=msg.run_id, status=status,
            delay=repr(delay),
            approval_timeout=repr(float(job.approval_timeout)) if job.approval_timeout else "", bell_cap=BELL_CAP,
            n_exec=len(fields),
            fields=[*field_pairs(fields), *field_pairs(rq_fields)],
        ).queue(pipe)
        pipe.hincrby(k.runs_unsettled(), msg.run_id, 1)  # the run is live (again): the run indexes must look at it
        self.events.execution(pipe, status, msg.run_id, job.name, xid, now)
        return xid

    def enqueue(self, pipe: Pipeline, xid: str, queue: str, at_front: bool = False) -> None:
        """Put an execution's RQ job in its queue and ring the queue's bell for idle workers."""
        qkey = self.keys.rq_queue(queue)
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
        outcome, outputs = take_outputs(outcome)
        status = final_status(ex, outcome)
        if spec.concurrency:
            self._release(pipe, ex)  # before the record: this execution's status is the run's latest for its job
        self._record(pipe, ex, outcome, status, pid, worker, now, outputs)
        if ex.attempt > 1:
            self.settle_replayed(pipe, ex.id)
        params = {**ex.params, **outputs} if outputs else ex.params
        if status == Status.succeeded:
            self.send(pipe, spec.name, ex.id, ex.run, spec.messages, params, now)
        elif status == Status.replaying:
            self._replay(pipe, ex, now, outcome.reason)
        elif status in (Status.failed, Status.killed):
            self.send_failure(pipe, spec, ex.id, ex.run, params, outcome.exit_code, outcome.reason, now)
        self.events.execution(pipe, status, ex.run, spec.name, ex.id, now)
        self.events.run_end(pipe, ex.run, now)
        return status

    def send(self, pipe: Pipeline, job: str, xid: str, run: str, topics: Iterable[str], params: dict[str, str],
             now: float) -> None:
        """Queue the messages an execution sends (origin `job:<name>:<execution id>`), counted in its run."""
        for topic in topics:
            send_in(pipe, self.keys, Message(topic, params, run, f"job:{job}:{xid}", now))

    def send_failure(self, pipe: Pipeline, spec: JobDef, xid: str, run: str, params: dict[str, str],
                     exit_code: Optional[int], reason: str, now: float) -> None:
        """Queue the job's `on_failure` messages for an execution that failed for good."""
        if spec.on_failure:
            self.send(pipe, spec.name, xid, run, spec.on_failure,
                      failure_params(spec.name, xid, params, exit_code, reason), now)

    def _record(self, pipe: Pipeline, ex: Claimed, outcome: OutcomeLike, status: str, pid: int, worker: str,
                now: float, outputs: dict[str, str]) -> None:
        """The execution's result, its RQ job and registries, the run's status and count, the job's stats."""
        k, ttl, ok = self.keys, int(self.settings.retention), outcome.ok
        fields = {
            Exec.status: status,
            Exec.exit_code: "" if outcome.exit_code is None else outcome.exit_code,
            Exec.signal: outcome.signal or "",
            Exec.reason: outcome.reason,
            Exec.started: repr(outcome.started),
            Exec.ended: repr(outcome.ended),
            Exec.duration: f"{outcome.duration:.6f}",
            Exec.tail: outcome.tail[-TAIL_LIMIT:],
            Exec.pid: pid or "",
        }
        if outputs:
            fields[Exec.outputs] = json.dumps(outputs)
        FINISH.bind(
            exec=k.execution(ex.id), rq_job=K.rq_job(ex.id), run=k.run(ex.run), stats=k.job_stats(ex.spec.name),
            inflight=k.worker_inflight(worker) if worker else "", rq_started=k.rq_started(ex.queue),
            rq_ended=(k.rq_finished if ok else k.rq_failed)(ex.queue), work=k.work(), ttl=ttl, id=ex.id, status=status,
            job=ex.spec.name, ok="1" if ok else "0", rq_status=RqStatus.finished if ok else RqStatus.failed,
            ended_iso=utc_iso(now), registry_score=now + ttl, started=fields[Exec.started],
            ended=fields[Exec.ended], duration=fields[Exec.duration], bucket=bucket_bound(outcome.duration),
            fields=field_pairs(fields),
        ).queue(pipe)

    def settle_replayed(self, pipe: Pipeline, xid: str) -> None:
        """The attempt `xid` replays is `failed` now, no longer `replaying`: its replay has had its turn."""
        SETTLE_REPLAYED.bind(exec=self.keys.execution(xid), exec_prefix=self.keys.execution("")).queue(pipe)

    def _release(self, pipe: Pipeline, ex: Claimed) -> None:
        k = self.keys
        RELEASE.bind(slots=k.slots(ex.spec.name), held=k.held(ex.spec.name), rq_queues=K.RQ_QUEUES, id=ex.id,
                     exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""), rq_queue_prefix=k.rq_queue(""),
                     run_prefix=k.run("")).queue(pipe)
        # The released execution (same job, same queue) may go to any idle worker, not only to this one.
        bell = k.bell(ex.queue)
        pipe.rpush(bell, 1)
        pipe.ltrim(bell, 0, BELL_CAP - 1)

    def _replay(self, pipe: Pipeline, ex: Claimed, now: float, reason: str) -> None:
        """The next attempt, delayed; CREATE marks the job `replaying` in the run (or the attempt `canceled` when
        the run was canceled meanwhile: nothing is left waiting)."""
        delay = replay_delay(ex.spec, ex.attempt, self.settings.replay_max_delay, reason)
        msg = Message(ex.topic, ex.params, ex.run, f"replay:{ex.id}", now)
        nxt = self.create(pipe, ex.spec, msg, now, attempt=ex.attempt + 1, replay_of=ex.id,
                          delay=delay, status=Status.delayed)
        pipe.hset(self.keys.execution(ex.id), Exec.next, nxt)

    def hand_back(self, pipe: Pipeline, ex: Claimed, worker: str) -> None:
        """Return a claimed execution to the front of its queue unrun (worker stopping); the attempt is not spent."""
        k = self.keys
        pipe.hset(k.execution(ex.id), mapping={Exec.status: Status.queued, Exec.started: "", Exec.worker: "",
                                               Exec.host: ""})
        pipe.hset(K.rq_job(ex.id), mapping={RqJob.status: RqStatus.queued, RqJob.started_at: "", RqJob.worker_name: ""})
        pipe.zrem(k.rq_started(ex.queue), f"{ex.id}:{ex.id}")
        pipe.hset(k.run(ex.run), Run.job_status + ex.spec.name, Status.queued)
        pipe.lrem(k.worker_inflight(worker), 1, ex.id)
        if ex.spec.concurrency:
            pipe.srem(k.slots(ex.spec.name), ex.id)
        self.enqueue(pipe, ex.id, ex.queue, at_front=True)
        self.events.execution(pipe, Status.queued, ex.run, ex.spec.name, ex.id, time.time())

"""Writes of executions, runs and job statistics: one pipeline per step (see docs/design.md)."""
from __future__ import annotations

import json
import socket
from typing import Any, Iterable, Optional

from redis.client import Pipeline

from angora_rq.core.codec import to_str
from angora_rq.core.execution import (Claimed, OutcomeLike, failure_params, final_status, followers, replay_delay,
                                      spec_json, spec_version, take_outputs)
from angora_rq.core import keys as K
from angora_rq.store.bus import send_in
from angora_rq.store.events import OUTBOX_CAP, Events
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, new_execution_id
from angora_rq.core.metrics import bucket_bound
from angora_rq.core.model import JobDef
from angora_rq.core.plans import plan_ref
from angora_rq.core.rqcompat import description, job_mapping, utc_iso
from angora_rq.core.schema import Defs, Exec, RqStatus, Status
from angora_rq.store.scripts import CREATE, FINISH, HAND_BACK, RECORD, RELEASE, SETTLE_REPLAYED, Bound, field_pairs
from angora_rq.core.settings import Settings

TAIL_LIMIT = 65536
TAIL_INLINE = 64  # bytes: a tail this short stays in the execution's hash (hash-max-ziplist-value), a longer one
BELL_CAP = 64     # goes to its own key
HOST = socket.gethostname()


def host_of(settings: Settings) -> str:
    """This host's name as executions record it: ANGORA_HOST, else the hostname."""
    return settings.host or HOST


class Finished:
    """The records of executions that ended, gathered for one FINISH call (store/lua/finish.lua)."""

    def __init__(self, worker: str, now: float) -> None:
        self.worker = worker  # whose inflight list they leave ('' = none)
        self.now = now
        self.rows: list[Any] = []
        self.ids: list[str] = []  # the rows' execution ids, in order
        # Messages they send that the caller dispatches itself, before FINISH (DISPATCH's direct mode): (definitions
        # version, message, the jobs it triggers).
        self.direct: list[tuple[str, Message, tuple[JobDef, ...]]] = []
        self.ok = 0  # of the rows, how many succeeded, and the seconds they all ran (RQ's counters of the worker)
        self.seconds = 0.0

    def take(self, ex: Claimed, msg: Message) -> bool:
        """Keep a message `ex` sends for direct dispatch if its job's follow record covers the topic (else it
        goes to the stream, for a matcher)."""
        jobs = followers(ex.follow, msg.topic)
        if jobs is None:
            return False
        self.direct.append((ex.version, msg, jobs))
        return True

    def add(self, ex: Claimed, outcome: OutcomeLike, status: str, live: bool, outputs: dict[str, str]) -> None:
        """One execution's row: its result fields (its outputs too), and what the script needs to file it."""
        tail = outcome.tail[-TAIL_LIMIT:]
        inline = len(tail.encode()) <= TAIL_INLINE
        fields = {
            Exec.status: status,
            Exec.exit_code: "" if outcome.exit_code is None else outcome.exit_code,
            Exec.signal: outcome.signal or "",
            Exec.reason: outcome.reason,
            Exec.started: repr(outcome.started),
            Exec.ended: repr(outcome.ended),
            Exec.tail: tail if inline else "",
            Exec.outputs: json.dumps(outputs) if outputs else "",
        }  # its duration is ended - started (the job's stats sum the runner's own)
        pairs = field_pairs({f: v for f, v in fields.items() if v != ""})
        self.ids.append(ex.id)
        self.ok += 1 if outcome.ok else 0
        self.seconds += outcome.duration
        self.rows += [ex.id, ex.run, ex.spec.name, ex.queue, status, "1" if outcome.ok else "0",
                      fields[Exec.started], fields[Exec.ended], f"{outcome.duration:.6f}",
                      bucket_bound(outcome.duration),
                      "" if inline else tail, "1" if live else "0", len(pairs) // 2, *pairs]


class State:
    """Executions, runs and job stats in Redis, under one key prefix."""

    def __init__(self, keys: Keys, settings: Settings, events: Optional[Events] = None) -> None:
        self.keys = keys
        self.settings = settings
        self.events = events or Events(None, keys)  # None: this State publishes no event
        self._specs: dict[tuple[str, str], tuple[str, str]] = {}

    def spec(self, job: JobDef, version: str) -> tuple[str, str]:
        """A job's spec JSON and the version it is recorded under; cached per (job, version) on the hot path."""
        key = (job.name, version)
        cached = self._specs.get(key) if version else None
        if cached is None:
            if len(self._specs) > 10_000:
                self._specs.clear()
            text = spec_json(job)
            cached = (text, spec_version(version, text))
            if version:  # without a version the same name may stand for another definition next time
                self._specs[key] = cached
        return cached

    # -- creating executions ----------------------------------------------------------------------
    def create(
        self,
        pipe: Pipeline,
        job: JobDef,
        msg: Message,
        now: float,
        *,
        config_version: str = "",
        attempt: int = 1,
        replay_of: str = "",
        delay: float = 0.0,
        status: str = Status.queued,
    ) -> str:
        """Create an execution and its RQ job; queue it unless delayed (for `delay` s of Redis' clock), held or
        awaiting approval (then until the job's approval_timeout, by Redis' clock too). Counts it in its run."""
        k = self.keys
        xid = new_execution_id()
        spec, version = self.spec(job, config_version)
        fields = {
            Exec.job: job.name, Exec.run: msg.run_id, Exec.attempt: attempt, Exec.status: status,
            Exec.queue: job.queue, Exec.topic: msg.topic, Exec.origin: msg.origin,
            Exec.params: json.dumps(msg.params) if msg.params else "", Exec.config_version: version,
            Exec.created: repr(now), Exec.replay_of: replay_of,
            Exec.limit: job.concurrency or "",
        }  # delay_until and approval_deadline: CREATE writes them, by Redis' clock
        fields = {f: v for f, v in fields.items() if v != ""}
        rq_status = {Status.queued: RqStatus.queued, Status.delayed: RqStatus.scheduled}.get(status, RqStatus.deferred)
        rq_fields = job_mapping(k.rq_name(job.queue), description(job.name, msg.run_id, attempt),
                                job.timeout or self.settings.default_timeout, now, rq_status)
        CREATE.bind(
            exec=k.execution(xid), rq_job=K.rq_job(xid), run=k.run(msg.run_id), job_execs=k.job_executions(job.name),
            stats=k.job_stats(job.name), rq_queue=k.rq_queue(job.queue), bell=k.bell(job.queue), delayed=k.delayed(),
            rq_queues=K.RQ_QUEUES, defs=k.definitions(version), defs_index=k.definitions_index(), work=k.work(),
            approvals=k.approvals(), history=self.settings.history, now=repr(now), id=xid, job=job.name,
            run_id=msg.run_id, status=status, delay=repr(delay),
            approval_timeout=repr(float(job.approval_timeout)) if job.approval_timeout else "", bell_cap=BELL_CAP,
            spec=spec,
            version=version, n_exec=len(fields),
            fields=[*field_pairs(fields), *field_pairs(rq_fields)],
        ).queue(pipe)
        pipe.hincrby(k.runs_unsettled(), msg.run_id, 1)  # the run is live (again): the run indexes must look at it
        self.events.execution(pipe, status, msg.run_id, job.name, xid, now)
        return xid

    def record_plan(self, pipe: Pipeline, version: str, plan: str, now: float) -> str:
        """Record a run plan's JSON under its definitions version; returns the ref a run keeps (Run.plan)."""
        ref = plan_ref(plan)
        pipe.hsetnx(self.keys.definitions(version), Defs.plan + ref, plan)
        pipe.zadd(self.keys.definitions_index(), {version: now})
        return ref

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
        live: bool = False,
        batch: Optional[Finished] = None,
    ) -> str:
        """Record a finished command: status, counters, RQ registries, messages or a replay. Returns the status.

        live: whether its tail key was written while it ran (worker._live_tails). With `batch`, the record itself
        joins the batch's one FINISH call (`record`, queued by the caller after every finalize of the batch), and
        the messages its follow record covers join the batch's direct dispatch (queued by the caller before it);
        without, it is queued last and every message goes to the stream."""
        spec = ex.spec
        outcome, outputs = take_outputs(outcome)
        status = final_status(ex, outcome)
        if spec.concurrency:
            self._release(pipe, ex, now)  # before the record: this execution's status is the run's latest for its job
        rows = batch if batch is not None else Finished(worker, now)
        rows.add(ex, outcome, status, live, outputs)
        if ex.attempt > 1:
            self.settle_replayed(pipe, ex.id)
        params = {**ex.params, **outputs} if outputs else ex.params
        if status == Status.succeeded:
            self.send(pipe, spec.name, ex.id, ex.run, spec.messages, params, now, batch, ex)
        elif status == Status.replaying:
            self._replay(pipe, ex, now, outcome.reason)
        elif status in (Status.failed, Status.killed):
            self.send_failure(pipe, spec, ex.id, ex.run, params, outcome.exit_code, outcome.reason, now, batch, ex)
        if batch is None:
            self.record(pipe, rows)  # after what it sends (FINISH publishes whether its run ended)
        return status

    def send(self, pipe: Pipeline, job: str, xid: str, run: str, topics: Iterable[str], params: dict[str, str],
             now: float, batch: Optional[Finished] = None, ex: Optional[Claimed] = None) -> None:
        """Queue the messages an execution sends (origin `job:<name>:<execution id>`), counted in its run; with
        `batch` and the execution claimed (`ex`), those its follow record covers go to the batch's direct
        dispatch instead."""
        for topic in topics:
            msg = Message(topic, params, run, f"job:{job}:{xid}", now)
            if batch is None or ex is None or not batch.take(ex, msg):
                send_in(pipe, self.keys, msg)

    def send_failure(self, pipe: Pipeline, spec: JobDef, xid: str, run: str, params: dict[str, str],
                     exit_code: Optional[int], reason: str, now: float, batch: Optional[Finished] = None,
                     ex: Optional[Claimed] = None) -> None:
        """Queue the job's `on_failure` messages for an execution that failed for good (see `send`)."""
        if spec.on_failure:
            self.send(pipe, spec.name, xid, run, spec.on_failure,
                      failure_params(spec.name, xid, params, exit_code, reason), now, batch, ex)

    def record(self, pipe: Pipeline, batch: Finished, rq_worker: str = "") -> None:
        """Queue the one FINISH call of a batch of finished executions (nothing when it is empty), after what they
        send: FINISH publishes how their runs ended, when something listens. rq_worker: RQ's hash of the worker
        whose counters move with the batch ('' = none)."""
        if batch.rows:
            self.finish_call(batch, rq_worker).queue(pipe)

    def finish_call(self, batch: Finished, rq_worker: str = "", guard: bool = False, inflight: bool = True) -> Bound:
        """A batch's FINISH call; with `guard`, for running alone: nothing is written (it returns -1) unless every
        execution is still in the worker's inflight list (store/lua/finish.lua). Without `inflight`, the list is
        left alone (RECORD took the ids out of it already)."""
        k = self.keys
        return FINISH.bind(
            work=k.work(), inflight=k.worker_inflight(batch.worker) if batch.worker and inflight else "",
            ended_iso=utc_iso(batch.now), registry_score=batch.now + self.settings.retention,
            exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""), run_prefix=k.run(""),
            stats_prefix=k.job_stats(""), tail_prefix=k.tail(""), rq_started_prefix=k.rq_started(""),
            rq_failed_prefix=k.rq_failed(""), events=k.events(), stream=k.stream(), runs=k.runs(),
            outbox=k.webhook_outbox(), accepted=k.accepted(), unsettled=k.runs_unsettled(), now=repr(batch.now),
            outbox_cap=OUTBOX_CAP, events_on="1" if self.events.any() else "", rows=batch.rows,
            rq_worker=rq_worker, guard="1" if guard else "",
        )

    def record_call(self, batch: Finished, dispatch: Bound, rq_worker: str = "") -> Bound:
        """A worker's batch whose only other write is `dispatch` (DISPATCH, direct mode): both in one guarded call
        (store/lua/record.lua); -1 when some execution is no longer the worker's, and then nothing is written."""
        finish = self.finish_call(batch, rq_worker, inflight=False)
        ids = batch.ids
        return RECORD.bind(inflight=self.keys.worker_inflight(batch.worker), n_ids=len(ids),
                           dispatch_keys=len(dispatch.keys), dispatch_args=len(dispatch.args),
                           finish_keys=len(finish.keys),
                           parts=[*ids, *dispatch.keys, *dispatch.args, *finish.keys, *finish.args])

    def settle_replayed(self, pipe: Pipeline, xid: str) -> None:
        """The attempt `xid` replays is `failed` now, no longer `replaying`: its replay has had its turn."""
        SETTLE_REPLAYED.bind(exec=self.keys.execution(xid), exec_prefix=self.keys.execution("")).queue(pipe)

    def _release(self, pipe: Pipeline, ex: Claimed, now: float) -> None:
        k = self.keys
        RELEASE.bind(slots=k.slots(ex.spec.name), held=k.held(ex.spec.name), rq_queues=K.RQ_QUEUES, id=ex.id,
                     exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""), rq_queue_prefix=k.rq_queue(""),
                     run_prefix=k.run(""), events=k.events(), stream=k.stream(), runs=k.runs(),
                     outbox=k.webhook_outbox(), work=k.work(), accepted=k.accepted(), unsettled=k.runs_unsettled(),
                     now=repr(now), outbox_cap=OUTBOX_CAP,
                     events_on="1" if self.events.any() else "").queue(pipe)
        # The released execution (same job, same queue) may go to any idle worker, not only to this one.
        bell = k.bell(ex.queue)
        pipe.rpush(bell, 1)
        pipe.ltrim(bell, 0, BELL_CAP - 1)

    def _replay(self, pipe: Pipeline, ex: Claimed, now: float, reason: str) -> None:
        """The next attempt, delayed; CREATE marks the job `replaying` in the run (or the attempt `canceled` when
        the run was canceled meanwhile: nothing is left waiting)."""
        delay = replay_delay(ex.spec, ex.attempt, self.settings.replay_max_delay, reason)
        msg = Message(ex.topic, ex.params, ex.run, f"replay:{ex.id}", now)
        nxt = self.create(pipe, ex.spec, msg, now, config_version=ex.version, attempt=ex.attempt + 1,
                          replay_of=ex.id, delay=delay, status=Status.delayed)
        pipe.hset(self.keys.execution(ex.id), Exec.next, nxt)

    def hand_back(self, pipe: Pipeline, ex: Claimed, worker: str, now: float) -> None:
        """Return a claimed execution to the front of its queue unrun (worker stopping); the attempt is not spent.
        In a run canceled meanwhile it is canceled instead."""
        k = self.keys
        HAND_BACK.bind(
            exec=k.execution(ex.id), rq_job=K.rq_job(ex.id), run=k.run(ex.run), inflight=k.worker_inflight(worker),
            rq_started=k.rq_started(ex.queue), slots=k.slots(ex.spec.name) if ex.spec.concurrency else "",
            rq_queue=k.rq_queue(ex.queue), rq_queues=K.RQ_QUEUES, bell=k.bell(ex.queue), tail=k.tail(ex.id),
            work=k.work(), rq_canceled=k.rq_canceled(ex.queue), events=k.events(), stream=k.stream(), runs=k.runs(),
            outbox=k.webhook_outbox(), accepted=k.accepted(), unsettled=k.runs_unsettled(), id=ex.id,
            job=ex.spec.name, run_id=ex.run, bell_cap=BELL_CAP, now=repr(now), now_iso=utc_iso(now),
            canceled_expiry=now + self.settings.retention, run_prefix=k.run(""), outbox_cap=OUTBOX_CAP,
            events_on="1" if self.events.any() else "",
        ).queue(pipe)


def finish_reply(reply: Any) -> tuple[int, list[str]]:
    """FINISH's (or RECORD's) reply: how many ends it recorded (-1: none, some execution was no longer the caller's),
    and what it could not write (a key of the wrong type: the rest was written all the same)."""
    if isinstance(reply, (list, tuple)):
        return int(reply[0]), [to_str(e) for e in reply[1:]]
    return int(reply), []


def load_claimed(r: Any, keys: Keys, xid: str, fields: dict[str, str]) -> Claimed:
    """An execution as a worker holds it, from its hash (decoded) and its spec, read from its definitions version."""
    spec = r.hget(keys.definitions(fields.get(Exec.config_version, "")), Defs.job + fields.get(Exec.job, ""))
    return Claimed.from_hash(xid, fields, to_str(spec))

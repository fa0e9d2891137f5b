"""Steering: run a job by hand, cancel or re-run a run, kill, retry or skip an execution."""
from __future__ import annotations

import json
import time
from typing import Any, Callable, Optional, TypeVar

import redis

from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core import keys as K
from angora_rq.store.bus import submit
from angora_rq.core.errors import Conflict, NotFound
from angora_rq.core.execution import UNVERSIONED, Claimed
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, check_params, check_run_id, new_run_id
from angora_rq.core.plans import PLAN_JSON, manual_plan, missing_parents
from angora_rq.core.schema import SKIPPABLE, WAITING, Event, Exec, RqJob, RqStatus, Run, Status
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.store.connection import WatchError
from angora_rq.store.events import Events
from angora_rq.store.pressure import Pressure
from angora_rq.store.queries import Queries
from angora_rq.store.scripts import DECIDE, RUN_COUNT
from angora_rq.store.state import BELL_CAP, State, load_claimed

# What cancel reads of each execution of a run.
ROW = (Exec.status, Exec.job, Exec.run, Exec.queue, Exec.worker, Exec.replay_of)
XID = "id"  # in a row: the execution's id (the key's, not a field)
# What `rerun --failed` starts again: jobs whose latest execution ran and failed, was killed, or was canceled.
RERUNNABLE = frozenset({Status.failed, Status.killed, Status.canceled})
RERUN_TRIES = 10
CANCEL_TRIES = 20
KILL_TRIES = 20
T = TypeVar("T")


class Control:
    """Actions a user takes from the CLI, the API or the UI."""

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.events = Events(r, keys)
        self.state = State(keys, settings, self.events)

    def run_job(self, snap: Snapshot, name: str, params: Any = None, run_id: Optional[str] = None,
                rerun_of: str = "") -> dict[str, str]:
        """Start one job now (origin `manual`); a parent_success job needs its parents to have succeeded in the run."""
        job = snap.config.job(name)
        if job is None:
            raise NotFound(f"no job named {name!r}")
        params = check_params(params)
        run_id = check_run_id(run_id) if run_id else new_run_id()
        try:
            run = Queries(self.r, self.keys).run_hash(run_id)  # with its plan's JSON, for the join's parents
        except NotFound:
            run = {}
        if job.parent_success:
            self._check_parents(snap, name, run, run_id)
        topic = next((t for t in job.triggers if "*" not in t and "#" not in t), "manual")
        now = time.time()
        msg = Message(topic, params, run_id, "manual", now)
        with self.r.pipeline() as pipe:
            if not run:
                version = snap.version or UNVERSIONED
                ref = self.state.record_plan(pipe, version, json.dumps(manual_plan(snap, name)), now)
                fields = {Run.created: repr(now), Run.topic: topic, Run.origin: "manual", Run.plan: ref,
                          Run.config_version: version}
                if params:
                    fields[Run.params] = json.dumps(params)
                if rerun_of:
                    fields[Run.rerun_of] = rerun_of
                pipe.hset(self.keys.run(run_id), mapping=fields)
                pipe.zadd(self.keys.runs(), {run_id: now})
                self.events.publish(pipe, Event.run + "started", run_id, now, {"status": "started", "topic": topic})
            gate = Status.awaiting_approval if job.approval else Status.queued  # by hand too: the gate holds
            xid = self.state.create(pipe, job, msg, now, config_version=snap.version, status=gate)
            pipe.execute()
        return {"run_id": run_id, "execution_id": xid}

    def _check_parents(self, snap: Snapshot, name: str, run: dict[str, str], run_id: str) -> None:
        missing = missing_parents(snap, name, run)
        if not run:
            raise Conflict(f"job {name!r} has parent_success: run it inside an existing run (--run-id) "
                           f"where its parents {missing} have succeeded")
        if missing:
            raise Conflict(f"job {name!r} has parent_success and these parents have not succeeded "
                           f"in run {run_id}: {', '.join(missing)}")

    def cancel_run(self, run_id: str, kill: bool = False) -> dict[str, Any]:
        """No further job of the run starts: its waiting executions (queued, delayed replays, held) are canceled at
        once; running commands finish, or with `kill` are killed. Returns the run id and the executions affected."""
        rk = self.keys.run(run_id)

        def attempt(pipe: Any) -> dict[str, Any]:
            # Watched before they are read: an execution created, claimed or promoted meanwhile means again.
            pipe.watch(rk)
            fields = [to_str(f) for f in pipe.hkeys(rk)]
            if not fields:
                raise NotFound(f"no run {run_id!r}")
            ids = [f[len(Run.execution):] for f in fields if f.startswith(Run.execution)]
            if ids:
                pipe.watch(*(self.keys.execution(x) for x in ids))
            rows = self._rows(ids)
            waiting = [f for f in rows if f[Exec.status] in WAITING]
            running = [f for f in rows if f[Exec.status] == Status.running and f[Exec.worker] not in ("", "rq")]
            pipe.multi()
            pipe.hset(rk, Run.canceled, "1")
            pipe.hincrby(self.keys.runs_unsettled(), run_id, 1)  # its status changes: the run indexes look again
            for f in waiting:
                self._drop_waiting(pipe, f, Status.canceled)
            for f in running if kill else ():
                pipe.rpush(self.keys.worker_control(f[Exec.worker]), f"kill {f[XID]}")
            return {"run_id": run_id, "canceled": True, "dropped": [f[XID] for f in waiting],
                    "kill_requested": [f[XID] for f in running] if kill else []}
        return self._until_unchanged(CANCEL_TRIES, attempt, f"run {run_id} kept changing while it was being canceled")

    def _rows(self, ids: list[str]) -> list[dict[str, str]]:
        """What cancel needs of each execution, in one round trip."""
        with self.r.pipeline(transaction=False) as p:
            for xid in ids:
                p.hmget(self.keys.execution(xid), *ROW)
            replies = p.execute()
        return [{**to_str_dict(dict(zip(ROW, reply))), XID: xid} for xid, reply in zip(ids, replies)]

    def rerun(self, snap: Snapshot, run_id: str) -> dict[str, str]:
        """A new run of a run's root message and params (of a run started by hand: that job by hand again)."""
        run = Queries(self.r, self.keys).run_hash(run_id)
        params = json.loads(run.get(Run.params) or "{}")
        new = new_run_id()
        if run.get(Run.origin) == "manual":
            jobs = json.loads(run[PLAN_JSON])["jobs"] if run.get(PLAN_JSON) else []
            if not jobs:
                raise Conflict(f"run {run_id} was started by hand but its plan names no job")
            started = self.run_job(snap, jobs[0], params, new, rerun_of=run_id)
            return {"run_id": new, "rerun_of": run_id, "execution_id": started["execution_id"]}
        if not run.get(Run.topic):
            raise Conflict(f"run {run_id} has no root message to send again")
        msg = Message(run[Run.topic], params, new, f"rerun:{run_id}", time.time())
        sent = submit(self.r, self.keys, msg, Pressure(self.r, self.keys, self.settings).budget())
        self.r.hset(self.keys.run(new), Run.rerun_of, run_id)
        return {"run_id": new, "rerun_of": run_id, "message_id": sent.message_id}

    def rerun_failed(self, snap: Snapshot, run_id: str) -> dict[str, Any]:
        """Start a finished run's failed, killed and canceled jobs again, in the same run (with the definitions in
        force): a new attempt of each one's latest execution. The jobs their failure held back (upstream_failed)
        follow as they succeed, parent_success joins included: they are matched again like any message."""
        rk = self.keys.run(run_id)

        def attempt(pipe: Any) -> dict[str, Any]:
            pipe.watch(rk)  # a concurrent re-run (or anything reopening the run) makes this one try again
            run = to_str_dict(pipe.hgetall(rk))
            execs = self._rerunnable(pipe, run_id, run)
            now = time.time()
            pipe.multi()
            pipe.hdel(rk, Run.canceled)
            return {"run_id": run_id, "executions": [self._again(pipe, snap, run_id, ex, now) for ex in execs]}
        return self._until_unchanged(RERUN_TRIES, attempt,
                                     f"run {run_id} kept changing while its failed jobs were being started again")

    def _rerunnable(self, pipe: Any, run_id: str, run: dict[str, str]) -> list[Claimed]:
        """The latest execution of each job `rerun_failed` starts again (NotFound, Conflict when there is none)."""
        if not run:
            raise NotFound(f"no run {run_id!r}")
        if int(run.get(Run.active) or 0) > 0:
            raise Conflict(f"run {run_id} is still running; re-run its failed jobs once it has finished")
        jobs = [k[len(Run.job_status):] for k, v in run.items() if k.startswith(Run.job_status) and v in RERUNNABLE]
        ids = [run.get(Run.job_execution + job, "") for job in jobs]
        found = [(xid, to_str_dict(pipe.hgetall(self.keys.execution(xid)))) for xid in ids]
        execs = [load_claimed(pipe, self.keys, xid, f) for xid, f in found if f]  # a dropped one cannot be repeated
        if not execs:
            raise Conflict(f"run {run_id} has no failed, killed or canceled job to re-run")
        return execs

    def _again(self, pipe: Any, snap: Snapshot, run_id: str, ex: Claimed, now: float) -> dict[str, str]:
        """Queue a new attempt of an execution in its run, with its job's definition in force if it still has one."""
        job = snap.config.job(ex.spec.name)
        msg = Message(ex.topic, ex.params, run_id, f"rerun:{ex.id}", now)
        nxt = self.state.create(pipe, job or ex.spec, msg, now, attempt=ex.attempt + 1, replay_of=ex.id,
                                config_version=snap.version if job else ex.version)
        pipe.hset(self.keys.execution(ex.id), Exec.next, nxt)
        return {"job": ex.spec.name, "execution_id": nxt, "rerun_of": ex.id}

    def kill(self, xid: str) -> str:
        """Kill a running execution (its whole process group) or drop a waiting one; returns what was done. An
        execution that changes meanwhile (claimed, held, started) is looked at again."""
        ek = self.keys.execution(xid)

        def attempt(pipe: Any) -> str:
            pipe.watch(ek)
            f = to_str_dict(pipe.hgetall(ek))
            if not f:
                raise NotFound(f"no execution {xid!r}")
            status = f.get(Exec.status)
            pipe.multi()
            if status == Status.running and f.get(Exec.worker) and f.get(Exec.worker) != "rq":
                pipe.rpush(self.keys.worker_control(f[Exec.worker]), f"kill {xid}")
                return "kill requested"
            if status in WAITING:
                self._drop_waiting(pipe, {**f, XID: xid}, Status.killed)
                ex = load_claimed(self.r, self.keys, xid, f)  # killed for good: its failure branch follows
                self.state.send_failure(pipe, ex.spec, xid, ex.run, ex.params, None, "killed", time.time())
                return "killed"
            raise Conflict(f"execution {xid} is {status}; only running or waiting executions can be killed")
        return self._until_unchanged(KILL_TRIES, attempt, f"execution {xid} kept changing while it was being killed")

    def _until_unchanged(self, tries: int, attempt: Callable[[Any], T], changing: str) -> T:
        """An optimistic transaction: `attempt` WATCHes what it reads on a fresh pipeline, queues its writes after
        MULTI and returns its answer; it goes again while a watched key changed before EXEC, at most `tries` times
        (then Conflict: `changing`, try again)."""
        for _ in range(tries):
            with self.r.pipeline() as pipe:
                answer = attempt(pipe)
                try:
                    pipe.execute()
                except WatchError:
                    continue
            return answer
        raise Conflict(f"{changing}; try again")

    def _drop_waiting(self, pipe: Any, f: dict[str, str], status: str) -> None:
        """An execution not started yet (its row, XID included) ends as `status`: out of every queue and list."""
        xid, run, job, now = f[XID], self.keys.run(f[Exec.run]), f[Exec.job], time.time()
        pipe.hset(self.keys.execution(xid), mapping={Exec.status: status, Exec.ended: repr(now)})
        pipe.hset(K.rq_job(xid), RqJob.status, RqStatus.canceled)
        pipe.zadd(self.keys.rq_canceled(f.get(Exec.queue) or "default"), {xid: time.time() + self.settings.retention})
        pipe.zrem(self.keys.delayed(), xid)
        pipe.zrem(self.keys.approvals(), xid)
        pipe.lrem(self.keys.rq_queue(f.get(Exec.queue) or "default"), 1, xid)
        pipe.lrem(self.keys.held(job), 1, xid)
        pipe.lrem(self.keys.paused_held(job), 1, xid)
        # The job's status, and the run's end time if this was its last piece.
        RUN_COUNT.bind(run=run, delta=-1, now=repr(now), fields=[Run.job_status + job, status]).queue(pipe)
        pipe.decr(self.keys.work())
        if f.get(Exec.replay_of):
            self.state.settle_replayed(pipe, xid)
        self.events.execution(pipe, status, f[Exec.run], job, xid, now)
        self.events.run_end(pipe, f[Exec.run], now)

    def decide(self, xid: str, approve: bool, by: str, now: Optional[float] = None) -> dict[str, Any]:
        """Approve or reject an execution awaiting approval (Conflict when it is not): approved, it is queued;
        rejected, it ends `rejected` (a failure: its run fails, its failure branch follows)."""
        ek, now = self.keys.execution(xid), time.time() if now is None else now
        decision = "approved" if approve else "rejected"
        with self.r.pipeline() as pipe:
            pipe.watch(ek)
            f = to_str_dict(pipe.hgetall(ek))
            if not f:
                raise NotFound(f"no execution {xid!r}")
            if f.get(Exec.status) != Status.awaiting_approval:
                raise Conflict(f"execution {xid} is {f.get(Exec.status)}, not awaiting approval: there is nothing "
                               f"to {'approve' if approve else 'reject'}", detail={"status": f.get(Exec.status)})
            ex = load_claimed(self.r, self.keys, xid, f)
            k, job = self.keys, ex.spec.name
            pipe.multi()
            DECIDE.bind(exec=ek, rq_job=K.rq_job(xid), run=k.run(ex.run), approvals=k.approvals(), work=k.work(),
                        stats=k.job_stats(job), paused_jobs=k.paused_jobs(), paused_held=k.paused_held(job),
                        rq_queue=k.rq_queue(ex.queue), rq_queues=K.RQ_QUEUES, bell=k.bell(ex.queue), id=xid, job=job,
                        decision=decision, by=by, now=repr(now), bell_cap=BELL_CAP).queue(pipe)
            if not approve:
                self.state.send_failure(pipe, ex.spec, xid, ex.run, ex.params, None, "rejected", now)
            self.events.execution(pipe, decision, ex.run, job, xid, now)
            if not approve:
                self.events.run_end(pipe, ex.run, now)
            try:
                replies = pipe.execute()
            except WatchError:
                raise Conflict(f"execution {xid} changed while it was being decided; look again") from None
        status = to_str(replies[0][1])
        return {"execution_id": xid, "status": status, "approval": decision, "decided_by": by, "decided_at": now}

    def retry(self, xid: str) -> str:
        """A new attempt of a finished execution, whatever its replay count; returns the new execution id."""
        f = self._finished(xid)
        ex = load_claimed(self.r, self.keys, xid, f)
        msg = Message(ex.topic, ex.params, ex.run, f"retry:{xid}", time.time())
        with self.r.pipeline() as pipe:
            nxt = self.state.create(pipe, ex.spec, msg, msg.sent_at, attempt=ex.attempt + 1, replay_of=xid,
                                    config_version=ex.version)
            pipe.hset(self.keys.execution(xid), Exec.next, nxt)
            pipe.execute()
        return nxt

    def skip(self, xid: str) -> None:
        """Mark a failed execution succeeded (`skipped`) and send its messages so its children proceed."""
        f = self._finished(xid)
        if f.get(Exec.status) not in SKIPPABLE:
            raise Conflict(f"execution {xid} is {f.get(Exec.status)}; only failed ones can be skipped")
        ex = load_claimed(self.r, self.keys, xid, f)
        now = time.time()
        with self.r.pipeline() as pipe:
            if f.get(Exec.next):
                nxt = to_str_dict(self.r.hgetall(self.keys.execution(f[Exec.next])))
                if nxt.get(Exec.status) in WAITING:
                    self._drop_waiting(pipe, {**nxt, XID: f[Exec.next]}, Status.canceled)
            pipe.hset(self.keys.execution(xid), Exec.status, Status.skipped)
            pipe.hset(self.keys.run(ex.run), Run.job_status + ex.spec.name, Status.skipped)
            pipe.hincrby(self.keys.runs_unsettled(), ex.run, 1)
            outputs = json.loads(f[Exec.outputs]) if f.get(Exec.outputs) else {}
            self.state.send(pipe, ex.spec.name, xid, ex.run, ex.spec.messages, {**ex.params, **outputs}, now)
            self.events.execution(pipe, Status.skipped, ex.run, ex.spec.name, xid, now)
            pipe.execute()

    def _finished(self, xid: str) -> dict[str, str]:
        f = to_str_dict(self.r.hgetall(self.keys.execution(xid)))
        if not f:
            raise NotFound(f"no execution {xid!r}")
        if f.get(Exec.status) in WAITING | {Status.running}:
            raise Conflict(f"execution {xid} is still {f[Exec.status]}")
        return f


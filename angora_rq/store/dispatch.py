"""A matcher batch's writes, or a worker's or the web's direct dispatch: one DISPATCH call (store/lua/dispatch.lua)
creates, guards, queues and acknowledges; and the follow records that tell workers what they dispatch themselves."""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import redis

from angora_rq.core import keys as K
from angora_rq.core.codec import to_str
from angora_rq.core.execution import UNVERSIONED
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.store.events import OUTBOX_CAP, Events
from angora_rq.core.messages import Message, new_execution_id
from angora_rq.core.model import JobDef
from angora_rq.core.plans import plan_ref
from angora_rq.core.rqcompat import job_mapping, utc_iso
from angora_rq.core.schema import Defs, RqJob
from angora_rq.core.pressure import NO_BUDGET, Budget
from angora_rq.core.settings import Settings
from angora_rq.store.link import Link
from angora_rq.store.scripts import DISPATCH, SEND_DISPATCH, Bound, field_pairs
from angora_rq.store.bus import Sent, answer, send_call
from angora_rq.store.state import BELL_CAP, State

log = logging.getLogger(__name__)

DIRECT_PREFIX = "direct:"  # the message id of a message dispatched with no stream entry (submit_direct)
# RQ fields the script fills in per execution; the rest of a job's RQ hash is the same for all its executions.
_PER_EXECUTION = (RqJob.created_at, RqJob.description, RqJob.status)
RECORD_EVERY = 60.0  # seconds: how often a matcher records again a spec, a plan and its version's use


@dataclass
class Outgoing:
    """One batch as the DISPATCH script takes it: entries with their plans, and the (entry, job) pairs to try."""

    messages: list[tuple[str, Message, str]]  # (entry, message, plan: '', '=' + JSON or '?' + JSON, see DISPATCH)
    dispatches: list[tuple[int, JobDef]]  # (index into messages, job); a parent_success job is tried once per run


def entry_order(entry: str) -> tuple[int, int]:
    """A stream entry id as what orders it: (milliseconds, sequence)."""
    ms, _, seq = entry.partition("-")
    return int(ms), int(seq or 0)


def gate_arg(job: JobDef) -> str:
    """How DISPATCH and CREATE learn a job is an approval gate: '' (it is not), its approval_timeout in seconds,
    or 'inf' (it waits as long as it takes)."""
    if not job.approval:
        return ""
    return repr(float(job.approval_timeout)) if job.approval_timeout else "inf"


def record_follow(r: Any, keys: Keys, version: str, records: dict[str, str], now: float) -> None:
    """Record a definitions version's follow records (Defs.follow, Snapshot.follow_records) and its use, so the
    janitor keeps the version while a matcher runs it. Nothing without a version: no worker dispatches then."""
    if not version or not records:
        return
    fields = [(Defs.follow + job, text) for job, text in records.items()]
    with r.pipeline(transaction=False) as p:
        for i in range(0, len(fields), 1000):  # many definitions: no single command holds Redis up for long
            p.hset(keys.definitions(version), mapping=dict(fields[i:i + 1000]))
        p.zadd(keys.definitions_index(), {version: now})
        p.execute()


def keep_follow(r: Any, keys: Keys, version: str, job: str, now: float) -> bool:
    """Record a version's use again (see record_follow); whether its follow record of `job` is still there (a
    Redis that restarted empty has lost them: the caller records them again)."""
    with r.pipeline(transaction=False) as p:
        p.zadd(keys.definitions_index(), {version: now})
        p.hexists(keys.definitions(version), Defs.follow + job)
        return bool(p.execute()[1])


class Dispatcher:
    """Runs the DISPATCH script for a matcher; caches each job's constant arguments per definitions version."""

    def __init__(self, link: Link, keys: Keys, settings: Settings, consumer: str,
                 events: Optional[Events] = None) -> None:
        self.link = link
        self.events = events or Events(None, keys)  # which events have listeners: DISPATCH publishes theirs
        self.keys = keys
        self.settings = settings
        self.consumer = consumer
        self._jobs: dict[tuple[str, str], list[Any]] = {}
        self._recorded: dict[tuple[str, str, str], float] = {}  # what it recorded when (`_due`)
        self._state = State(keys, settings)

    def dispatch(self, batch: Outgoing, version: str, now: float) -> tuple[int, list[tuple[int, str]]]:
        """Create every execution of the entries still pending for this matcher and acknowledge them: one round trip.

        Returns the executions created and, for '?' plans the run already had another plan for, (index into
        batch.messages, that plan's JSON).
        """
        marks: list[tuple[str, str, str]] = []
        created, *rest = self._bind(batch, version, now, marks, direct="", spare=0).run(self.link)
        self.recorded(marks, now)
        pairs = list(zip(rest[::2], rest[1::2]))
        notes = [to_str(text) for m, text in pairs if int(m) == 0]
        if notes:  # written once with the rest: going again would queue twice
            log.error("matcher %s: a batch was dispatched without some of its records (%s)", self.consumer,
                      "; ".join(notes))
        return int(created), [(int(m) - 1, to_str(old)) for m, old in pairs if int(m) != 0]

    def direct(self, batch: Outgoing, version: str, now: float,
               spare: int = 0) -> tuple[Bound, list[tuple[str, str, str]]]:
        """The dispatch of the messages a worker's executions send, for its record of their ends, before FINISH
        (DISPATCH's direct mode: no stream entry, no pending check; its executions created at once). `spare`: the
        free slots of the worker's claim that follows in the same round trip, when all these jobs are on its
        queues (DISPATCH rings no bell for executions that claim takes). Returns the call and what it records (a
        spec, its version's use), for `recorded` once it went through."""
        marks: list[tuple[str, str, str]] = []
        return self._bind(batch, version, now, marks, direct="1", spare=spare), marks

    def root(self, msg: Message, jobs: Sequence[JobDef], plan: str, version: str,
             now: float) -> tuple[Bound, list[tuple[str, str, str]]]:
        """The DISPATCH call (its 'root' mode) of a root message that starts a fresh run, for a script that accepts
        it first in the same call (submit_direct): its executions of `jobs` (no parent_success join), its
        run's `plan` (JSON) written. Returns the call and what it records (`recorded`, once it went through)."""
        marks: list[tuple[str, str, str]] = []
        batch = Outgoing([("", msg, "=" + plan)], [(0, job) for job in jobs])
        return self._bind(batch, version, now, marks, direct="root", spare=0), marks

    def recorded(self, marks: list[tuple[str, str, str]], now: float) -> None:
        """Remember what a call that succeeded recorded (`_due`)."""
        if len(self._recorded) > 10_000:
            self._recorded.clear()
        self._recorded.update((what, now) for what in marks)

    def _bind(self, batch: Outgoing, version: str, now: float, marks: list[tuple[str, str, str]],
              direct: str, spare: int) -> Bound:
        k = self.keys
        job_no: dict[str, int] = {}
        rest: list[Any] = []  # the script's `batch...`: jobs, messages, dispatches
        for _, job in batch.dispatches:
            if job.name not in job_no:
                job_no[job.name] = len(job_no) + 1
                args = self._job_args(job, version)
                if not self._due(("job", version, job.name), now, marks):
                    args = [*args[:2], "", *args[3:]]  # recorded less than a minute ago: not again
                rest += args
        batch_version = version or UNVERSIONED
        for entry, msg, plan in batch.messages:
            mode, text = plan[:1], plan[1:]
            if text:
                ref = plan_ref(text)
                text = f"{ref} {text}" if self._due(("plan", batch_version, ref), now, marks) else ref
            rest += (entry, msg.run_id, msg.topic, msg.origin, json.dumps(msg.params) if msg.params else "",
                     k.run(msg.run_id), mode, text)
        for m, job in batch.dispatches:
            rest += (m + 1, job_no[job.name], new_execution_id(), "1" if job.parent_success else "")
        ids = sorted((entry_order(e), e) for e, _, _ in batch.messages if e) or [((0, 0), "0-0")]
        return DISPATCH.bind(
            stream=k.stream(), paused_jobs=k.paused_jobs(), rq_queues=K.RQ_QUEUES, defs=k.definitions(batch_version),
            defs_index=k.definitions_index(), work=k.work(), metrics=k.metrics(), approvals=k.approvals(),
            events=k.events(), runs=k.runs(), outbox=k.webhook_outbox(), accepted=k.accepted(),
            unsettled=k.runs_unsettled(), now=repr(now),
            now_iso=utc_iso(now), history=self.settings.history, group=MATCHER_GROUP, consumer=self.consumer,
            first=ids[0][1], last=ids[-1][1], config_version=batch_version, bell_cap=BELL_CAP,
            exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""), defs_prefix=k.definitions(""),
            run_prefix=k.run(""), outbox_cap=OUTBOX_CAP, events_on="1" if self.events.any() else "",
            direct=direct, spare=spare, n_jobs=len(job_no), n_messages=len(batch.messages),
            n_dispatches=len(batch.dispatches), batch=rest,
        )

    def _due(self, what: tuple[str, str, str], now: float, marks: list[tuple[str, str, str]]) -> bool:
        """Whether a spec or plan (and its version's use) is to be recorded again: at most once a RECORD_EVERY per
        matcher (`marks` collects what this batch records: `dispatch` keeps them once the call succeeded). The
        janitor drops a version only once unused for an hour (store/history.py), so one in use keeps them."""
        if not what[1]:
            return True  # no version: the same name may stand for another definition next time
        last = self._recorded.get(what)
        if last is not None and now - last < RECORD_EVERY:
            return False
        marks.append(what)
        return True

    def _job_args(self, job: JobDef, version: str) -> list[Any]:
        """A job's constant arguments (name, queue, spec, keys, RQ fields), built once per definitions version."""
        cached = self._jobs.get((job.name, version)) if version else None
        if cached is None:
            if len(self._jobs) > 10_000:
                self._jobs.clear()
            k = self.keys
            rq = job_mapping(k.rq_name(job.queue), "", job.timeout or self.settings.default_timeout, 0.0)
            assert all(name in rq for name in _PER_EXECUTION)
            spec, spec_v = self._state.spec(job, version)
            cached = [job.name, job.queue, spec, spec_v, job.concurrency or "", k.job_stats(job.name),
                      k.job_executions(job.name), k.rq_queue(job.queue), k.bell(job.queue),
                      k.paused_held(job.name), gate_arg(job), len(rq), *field_pairs(rq)]
            if version:  # without a version the same name may stand for another definition next time
                self._jobs[(job.name, version)] = cached
        return cached


def submit_direct(r: redis.Redis, keys: Keys, msg: Message, dispatcher: Dispatcher, jobs: Sequence[JobDef],
                  plan: str, version: str, budget: Budget = NO_BUDGET, key: str = "",
                  key_ttl: float = Settings.idempotency_ttl, wait: Optional[Sequence[Any]] = None) -> Sent:
    """Accept a root message that starts a fresh run AND dispatch it to `jobs` (none a parent_success join) in
    one atomic call (send_dispatch.lua): no stream entry, no matcher. `plan`: the run's plan JSON, `version`: the
    definitions' (the matchers'). Answers and refuses as `submit` does (a repeat dispatches nothing); the
    message id is `direct_id(msg)`, never a stream entry's."""
    now = msg.sent_at or time.time()
    root, marks = dispatcher.root(msg, jobs, plan, version, now)
    call = _send_dispatch(send_call(keys, msg, budget, key, key_ttl, direct_id(msg), now).named(), root.named())
    sent = answer(r, keys, msg, call, budget, wait)
    if not sent.replayed:
        dispatcher.recorded(marks, now)
    return sent


def _send_dispatch(s: dict[str, Any], d: dict[str, Any]) -> Bound:
    """SEND_DISPATCH's call from SEND's (`s`) and DISPATCH's (`d`) values by name (DISPATCH's events_on, a flag,
    is `listened`: SEND's events_on is a key)."""
    differ = sorted(n for n in s.keys() & d.keys() if n != "events_on" and s[n] != d[n])
    if differ:
        raise ValueError(f"SEND and DISPATCH disagree on {differ}")
    return SEND_DISPATCH.bind(
        stream=s["stream"], run=s["run"], runs=s["runs"], work=s["work"], accepted=s["accepted"], idem=s["idem"],
        unsettled=s["unsettled"], events=s["events"], outbox=s["outbox"], events_on=s["events_on"],
        paused_jobs=d["paused_jobs"], rq_queues=d["rq_queues"], defs=d["defs"], defs_index=d["defs_index"],
        metrics=d["metrics"], approvals=d["approvals"], budget=s["budget"], accepted_cap=s["accepted_cap"],
        now=s["now"], run_id=s["run_id"], topic=s["topic"], origin=s["origin"], idem_ttl=s["idem_ttl"],
        fingerprint=s["fingerprint"], fresh=s["fresh"], run_prefix=s["run_prefix"], outbox_cap=s["outbox_cap"],
        entry=s["entry"], now_iso=d["now_iso"], history=d["history"], group=d["group"], consumer=d["consumer"],
        first=d["first"], last=d["last"], config_version=d["config_version"], bell_cap=d["bell_cap"],
        exec_prefix=d["exec_prefix"], rq_job_prefix=d["rq_job_prefix"], defs_prefix=d["defs_prefix"],
        listened=d["events_on"], direct=d["direct"], n_jobs=d["n_jobs"], n_messages=d["n_messages"],
        n_dispatches=d["n_dispatches"], n_fields=len(s["fields"]), rest=[*s["fields"], *d["batch"]])


def direct_id(msg: Message) -> str:
    """The message id answered for a message dispatched with no stream entry (submit_direct): `direct:<run id>`
    (its run is fresh, so this message is its only one so far); a stream entry id is `<ms>-<seq>`."""
    return DIRECT_PREFIX + msg.run_id

"""A matcher batch's writes: one DISPATCH call (store/lua/dispatch.lua) creates, guards, queues and acknowledges."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from angora_rq.core import keys as K
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.store.events import OUTBOX_CAP, Events
from angora_rq.store.link import Link
from angora_rq.core.messages import Message, new_execution_id
from angora_rq.core.model import JobDef
from angora_rq.core.rqcompat import job_data_parts, job_mapping, utc_iso
from angora_rq.core.schema import RqJob
from angora_rq.store.scripts import DISPATCH, field_pairs
from angora_rq.core.settings import Settings
from angora_rq.core.execution import spec_json
from angora_rq.store.state import BELL_CAP

# RQ fields the script fills in per execution; the rest of a job's RQ hash is the same for all its executions.
_PER_EXECUTION = (RqJob.created_at, RqJob.enqueued_at, RqJob.data, RqJob.description, RqJob.status)


@dataclass
class Outgoing:
    """One batch as the DISPATCH script takes it: entries with their plans, and the (entry, job) pairs to try."""

    messages: list[tuple[str, Message, str]]  # (entry, message, plan: '', '=' + JSON or '?' + JSON, see DISPATCH)
    dispatches: list[tuple[int, JobDef, str]]  # (index into messages, job, guard key)


def gate_arg(job: JobDef) -> str:
    """How DISPATCH and CREATE learn a job is an approval gate: '' (it is not), its approval_timeout in seconds,
    or 'inf' (it waits as long as it takes)."""
    if not job.approval:
        return ""
    return repr(float(job.approval_timeout)) if job.approval_timeout else "inf"


class Dispatcher:
    """Runs the DISPATCH script for a matcher; caches each job's constant arguments per definitions version."""

    def __init__(self, link: Link, keys: Keys, settings: Settings, consumer: str,
                 events: Optional[Events] = None) -> None:
        self.link = link
        self.events = events or Events(None, keys)  # which events have listeners: DISPATCH publishes theirs
        self.consumer = consumer  # the matcher's name in the consumer group
        self.keys = keys
        self.settings = settings
        self._jobs: dict[tuple[str, str], list[Any]] = {}
        self._head, self._tail = job_data_parts(keys.prefix)

    def dispatch(self, batch: Outgoing, version: str, now: float, guard_ttl: int) -> tuple[int, list[tuple[int, str]]]:
        """Create every execution whose guard is free and acknowledge every entry: one round trip.

        Returns the executions created and, for '?' plans the run already had another plan for, (index into
        batch.messages, that plan).
        """
        k, ttl = self.keys, int(self.settings.retention)
        job_no: dict[str, int] = {}
        rest: list[Any] = []  # the script's `batch...`: jobs, messages, dispatches
        for _, job, _ in batch.dispatches:
            if job.name not in job_no:
                job_no[job.name] = len(job_no) + 1
                rest += self._job_args(job, version, ttl)
        for entry, msg, plan in batch.messages:
            rest += (entry, msg.run_id, msg.topic, msg.origin, json.dumps(msg.params), k.run(msg.run_id),
                     k.run_executions(msg.run_id), plan)
        for m, job, guard in batch.dispatches:
            rest += (m + 1, job_no[job.name], new_execution_id(), guard)
        created, *conflicts = DISPATCH.bind(
            stream=k.stream(), paused_jobs=k.paused_jobs(), rq_queues=K.RQ_QUEUES, work=k.work(), metrics=k.metrics(),
            approvals=k.approvals(), events=k.events(), runs=k.runs(), outbox=k.webhook_outbox(), accepted=k.accepted(),
            unsettled=k.runs_unsettled(), run_prefix=k.run(""), outbox_cap=OUTBOX_CAP,
            events_on="1" if self.events.any() else "",
            now=repr(now), now_iso=utc_iso(now), ttl=ttl, history=self.settings.history, guard_ttl=guard_ttl,
            config_version=version, bell_cap=BELL_CAP, exec_prefix=k.execution(""), rq_job_prefix=K.rq_job(""),
            group=MATCHER_GROUP, consumer=self.consumer, data_head=self._head, data_tail=self._tail,
            n_jobs=len(job_no), n_messages=len(batch.messages),
            n_dispatches=len(batch.dispatches), batch=rest,
        ).run(self.link)
        return int(created), [(int(m) - 1, old.decode()) for m, old in zip(conflicts[::2], conflicts[1::2])]

    def _job_args(self, job: JobDef, version: str, ttl: int) -> list[Any]:
        """A job's constant arguments (name, queue, spec, keys, RQ fields), built once per definitions version."""
        cached = self._jobs.get((job.name, version)) if version else None
        if cached is None:
            if len(self._jobs) > 10_000:
                self._jobs.clear()
            k = self.keys
            timeout = job.timeout or self.settings.default_timeout
            rq = job_mapping("", k.prefix, k.rq_name(job.queue), "", timeout, ttl, 0.0)
            assert all(name in rq for name in _PER_EXECUTION)
            cached = [job.name, job.queue, spec_json(job), job.concurrency or 0, k.job_stats(job.name),
                      k.job_executions(job.name), k.rq_queue(job.queue), k.bell(job.queue),
                      k.paused_held(job.name), gate_arg(job), len(rq), *field_pairs(rq)]
            if version:  # without a version the same name may stand for another definition next time
                self._jobs[(job.name, version)] = cached
        return cached

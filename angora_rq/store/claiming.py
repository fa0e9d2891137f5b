"""A worker's CLAIM call: up to `free` executions from its queues, each marked running under it, in one round trip
(store/lua/claim.lua)."""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

from angora_rq.core import keys as K
from angora_rq.core.codec import to_str
from angora_rq.core.execution import CLAIM_WIDTH, worker_host
from angora_rq.core.keys import Keys
from angora_rq.core.rqcompat import utc_iso
from angora_rq.core.settings import Settings
from angora_rq.store.events import OUTBOX_CAP
from angora_rq.store.scripts import CLAIM, Bound
from angora_rq.store.state import host_of


def claim_call(keys: Keys, settings: Settings, worker: str, queues: tuple[str, ...], now: float, free: int,
               events: bool = False) -> Bound:
    """The CLAIM call of worker `worker` for up to `free` executions from `queues` (publishing their events when
    `events`: some event has a listener)."""
    c = _claim_keys(keys, worker)
    return CLAIM.bind(
        inflight=c.inflight, paused_queues=c.paused_queues, events=c.events, stream=c.stream, runs=c.runs,
        outbox=c.outbox, work=c.work, accepted=c.accepted, unsettled=c.unsettled, outbox_cap=OUTBOX_CAP,
        events_on="1" if events else "", want=free, now=repr(now), worker=worker, host=_claim_host(settings, worker),
        started_expiry=now + settings.default_timeout + 600, now_iso=utc_iso(now), exec_prefix=c.exec_prefix,
        run_prefix=c.run_prefix, rq_job_prefix=c.rq_job_prefix, rq_started_prefix=c.rq_started_prefix,
        slots_prefix=c.slots_prefix, held_prefix=c.held_prefix, rq_queue_prefix=c.rq_queue_prefix,
        defs_prefix=c.defs_prefix, queues=queues,
    )


def claimed_ids(reply: Sequence[Any]) -> list[str]:
    """The ids of the executions a CLAIM reply started (CLAIM_WIDTH values each)."""
    return [to_str(x) for x in reply[0::CLAIM_WIDTH]]


class ClaimKeys(NamedTuple):
    """The key names of a worker's CLAIM calls (built once: a worker claims at every step)."""

    inflight: str
    paused_queues: str
    events: str
    stream: str
    runs: str
    outbox: str
    work: str
    accepted: str
    unsettled: str
    exec_prefix: str
    run_prefix: str
    rq_job_prefix: str
    rq_started_prefix: str
    slots_prefix: str
    held_prefix: str
    rq_queue_prefix: str
    defs_prefix: str


@functools.lru_cache(maxsize=64)
def _claim_keys(k: Keys, worker: str) -> ClaimKeys:
    return ClaimKeys(k.worker_inflight(worker), k.paused_queues(), k.events(), k.stream(), k.runs(),
                     k.webhook_outbox(), k.work(), k.accepted(), k.runs_unsettled(), k.execution(""), k.run(""),
                     K.rq_job(""), k.rq_started(""), k.slots(""), k.held(""), k.rq_queue(""), k.definitions(""))


@functools.lru_cache(maxsize=64)
def _claim_host(settings: Settings, worker: str) -> str:
    """The host a claim records: '' when the worker's name says it (host.pid.random: not stored twice)."""
    host = host_of(settings)
    return "" if worker_host(worker) == host else host

"""The message bus: one Redis stream read by the matchers' consumer group."""
from __future__ import annotations

import time
from typing import Optional

import redis
from redis.client import Pipeline

from angora_rq.store.connection import redis_errors
from angora_rq.core.errors import Unavailable
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.store.link import link_for
from angora_rq.core.messages import Message
from angora_rq.store.scripts import Scripts, shared_scripts


def send(r: redis.Redis, keys: Keys, msg: Message, backlog: int = 0, scripts: Optional[Scripts] = None) -> str:
    """Accept a root message (HTTP, CLI, scheduler) in one round trip; `Unavailable` when over budget or OOM."""
    scripts = scripts or shared_scripts()
    fields = msg.to_fields()
    flat = [x for kv in fields.items() for x in kv]
    args = [backlog, repr(msg.sent_at or time.time()), msg.run_id, len(fields), *flat, msg.topic, msg.origin]
    with redis_errors():
        try:
            entry = link_for(r).script(scripts.send, send_keys(keys, msg.run_id), args)
        except redis.exceptions.ResponseError as e:
            if "BACKLOG" in str(e):
                raise Unavailable(
                    f"too many messages waiting ({backlog} or more); try again later",
                    detail={"backlog": backlog},
                ) from e
            raise
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def send_keys(keys: Keys, run_id: str) -> list[str]:
    """The KEYS of the SEND script (the scheduler's TICK passes them too, then its own)."""
    return [keys.stream(), keys.run(run_id), keys.runs(), keys.runs_unsettled()]


def send_in(pipe: Pipeline, keys: Keys, msg: Message) -> None:
    """Queue an internal message (sent by a job that succeeded) on a pipeline, counted in its run."""
    pipe.xadd(keys.stream(), msg.to_fields())  # type: ignore[arg-type]
    pipe.hincrby(keys.run(msg.run_id), "active", 1)


def ensure_group(r: redis.Redis, keys: Keys) -> None:
    """Create the matchers' consumer group (from the start of the stream, so nothing sent earlier is missed)."""
    try:
        r.xgroup_create(keys.stream(), MATCHER_GROUP, id="0", mkstream=True)
    except redis.exceptions.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


def trim(r: redis.Redis, keys: Keys) -> int:
    """Drop entries every matcher is done with: below the oldest pending entry and the last delivered one.

    Never `MAXLEN ~`: that drops entries nobody has read yet (facts.md).
    """
    stream = keys.stream()
    groups = r.xinfo_groups(stream)
    group = next((g for g in groups if _s(g["name"]) == MATCHER_GROUP), None)
    if group is None:
        return 0
    last = _s(group["last-delivered-id"])
    if last in ("0-0", "0"):
        return 0
    ms, seq = (int(x) for x in last.split("-"))
    min_id = f"{ms}-{seq + 1}"
    pending = r.xpending(stream, MATCHER_GROUP)
    if pending and pending.get("pending"):
        oldest = _s(pending["min"])
        if _id_lt(oldest, min_id):
            min_id = oldest
    return int(r.xtrim(stream, minid=min_id, approximate=False))


def backlog_size(r: redis.Redis, keys: Keys) -> int:
    """Entries in the stream not yet trimmed (pending, undelivered and recently acknowledged)."""
    return int(r.xlen(keys.stream()))


def _id_lt(a: str, b: str) -> bool:
    am, asq = (int(x) for x in a.split("-"))
    bm, bsq = (int(x) for x in b.split("-"))
    return (am, asq) < (bm, bsq)


def _s(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)

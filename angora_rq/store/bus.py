"""The message bus: one Redis stream read by the matchers' consumer group."""
from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import redis
from redis.client import Pipeline

from angora_rq.core.codec import to_str
from angora_rq.store.connection import redis_errors, unavailable
from angora_rq.core.errors import Conflict
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.store.link import borrowed
from angora_rq.core.messages import Message, fingerprint
from angora_rq.core.pressure import NO_BUDGET, Budget, refusal
from angora_rq.core.schema import Run
from angora_rq.store.events import OUTBOX_CAP, Events
from angora_rq.core.settings import Settings
from angora_rq.store.metrics import count_refused
from angora_rq.store.replication import confirm
from angora_rq.store.scripts import SEND, Bound, field_pairs, run_each


@dataclass(frozen=True)
class Sent:
    """The answer to a send: the run and stream entry of the message (dispatch.direct_id when it was dispatched
    without one), and whether it repeats an earlier send."""

    run_id: str
    message_id: str
    replayed: bool = False


def send(r: redis.Redis, keys: Keys, msg: Message, budget: Budget = NO_BUDGET,
         wait: Optional[Sequence[Any]] = None, listened: Optional[bool] = None) -> str:
    """Accept a root message (the Python API) in one round trip; its entry id. See `submit`. Who listens to events
    is this process's copy unless `listened` says (`listeners`)."""
    heard = listeners(r, keys) if listened is None else listened
    return submit(r, keys, msg, budget, wait=wait, listened=heard).message_id


_COPIES: OrderedDict[tuple[int, str], Events] = OrderedDict()  # per connection pool and key prefix, the newest last
_COPIES_KEPT = 8
_copies_lock = threading.Lock()


def listeners(r: redis.Redis, keys: Keys) -> Optional[bool]:
    """Whether any event has a listener, from this process's copy for `r`'s connection pool and `keys` (read at
    most once a second, store/events.Events; None when it could not be read lately: SEND then looks itself). A
    process that sends many messages saves SEND's look at `events:on` for each run it starts: one command per
    message of the Python API, as the web and the worker do."""
    slot = (id(r.connection_pool), keys.prefix)
    with _copies_lock:
        copy = _COPIES.get(slot)
        if copy is None or copy.r is None or copy.r.connection_pool is not r.connection_pool:
            copy = _COPIES[slot] = Events(r, keys)
            if len(_COPIES) > _COPIES_KEPT:
                _COPIES.popitem(last=False)
        _COPIES.move_to_end(slot)
    return copy.known()


def submit(r: redis.Redis, keys: Keys, msg: Message, budget: Budget = NO_BUDGET, key: str = "",
           key_ttl: float = Settings.idempotency_ttl, wait: Optional[Sequence[Any]] = None,
           listened: Optional[bool] = None, key_name: str = "") -> Sent:
    """Accept a root message in one round trip; with an idempotency `key`, a repeat within `key_ttl` seconds gets
    the first answer (replayed) and sends nothing, even past a budget. `Overloaded` (503) past a budget,
    `Unavailable` when Redis is down or out of memory; `Conflict` when the key was first used for another topic or
    params. `wait` (replication.wait_command): the WAIT that must confirm a replica has the message before it
    counts as accepted, in the same round trip; `NotReplicated` (503) when none did in time. `listened`: whether
    any event has a listener, from the caller's copy (store/events.Events.any); None: SEND looks itself.
    `key_name`: the idempotency record's key itself, for a key of Angora's own (not a client's `key`)."""
    call = send_call(keys, msg, budget, key, key_ttl, "", listened=listened, key_name=key_name)
    return answer(r, keys, msg, call, budget, wait)


def send_call(keys: Keys, msg: Message, budget: Budget, key: str, key_ttl: float, entry: str,
              now: Optional[float] = None, listened: Optional[bool] = None, key_name: str = "") -> Bound:
    """SEND's call for a message (`entry`: SEND's, '' to add a stream entry; see dispatch.submit_direct: with an
    entry given, no stream entry is written, so its fields are not sent). `listened`: see `submit`."""
    return SEND.bind(stream=keys.stream(), run=keys.run(msg.run_id), runs=keys.runs(), work=keys.work(),
                     accepted=keys.accepted(), idem=key_name or (keys.idempotency(key) if key else ""),
                     unsettled=keys.runs_unsettled(), budget=budget.work,
                     accepted_cap=budget.accepted_cap, now=repr(now or msg.sent_at or time.time()), run_id=msg.run_id,
                     topic=msg.topic, origin=msg.origin, idem_ttl=max(1, int(key_ttl)),
                     fingerprint=fingerprint(msg) if key or key_name else "", fresh="1" if msg.new_run else "0",
                     entry=entry,
                     listen="?" if listened is None else "1" if listened else "",
                     fields=[] if entry else field_pairs(msg.to_fields()), events=keys.events(),
                     outbox=keys.webhook_outbox(), events_on=keys.events_on(),
                     run_prefix=keys.run(""), outbox_cap=OUTBOX_CAP)


def answer(r: redis.Redis, keys: Keys, msg: Message, call: Bound, budget: Budget,
           wait: Optional[Sequence[Any]]) -> Sent:
    """Run a SEND (or SEND_DISPATCH) call, then `wait` in the same round trip: its answer (refusals raised)."""
    [out] = answer_all(r, keys, [msg], [call], budget, wait)
    if isinstance(out, Exception):
        raise out
    return out


def answer_all(r: redis.Redis, keys: Keys, msgs: Sequence[Message], calls: Sequence[Bound], budget: Budget,
               wait: Optional[Sequence[Any]]) -> list[Union[Sent, Exception]]:
    """Run SEND calls (one per message, in order), then `wait`, in one round trip: per message its answer or its
    refusal (returned, not raised). Redis down, out of memory or read-only, or no replica confirming, raises."""
    with redis_errors():
        with borrowed(r) as link:
            replies, acked = run_each(link, calls, wait)
        if wait is not None and not all(isinstance(reply, Exception) for reply in replies):  # (all refused: no write)
            confirm(acked, "the message" if len(calls) == 1 else "the messages")
        outcomes = [_answer(msg, reply, budget) for msg, reply in zip(msgs, replies)]
    for reason, n in Counter(reason for _, reason in outcomes if reason).items():
        count_refused(r, keys, reason, n)
    return [outcome for outcome, _ in outcomes]


def _answer(msg: Message, reply: Any, budget: Budget) -> tuple[Union[Sent, Exception], str]:
    """One SEND reply as the caller's answer (a Sent, a refusal or the error, unraised) and the reason /metrics
    counts a refusal under ('' for anything else)."""
    if isinstance(reply, redis.exceptions.ResponseError):
        refused, reason = _refused(reply, budget)
        if refused is reply:  # out of memory, read-only...: as redis_errors() would raise it
            refused = unavailable(reply) or reply
        if refused is not reply:
            refused.__cause__ = reply
        return refused, reason
    if isinstance(reply, list):
        return Sent(to_str(reply[0]), to_str(reply[1]), replayed=True), ""
    return Sent(msg.run_id, to_str(reply)), ""


def _refused(e: redis.exceptions.ResponseError, budget: Budget) -> tuple[Exception, str]:
    """The error SEND refused a message with, and its reason for /metrics; anything else unchanged, reason ''."""
    text = str(e)
    refused = refusal(text, budget)
    if refused is not None:
        return refused, "backlog"
    if text.startswith("KEYREUSE"):
        _, run_id, entry = text.split()
        return Conflict("this idempotency key was used for another message (another topic or params); "
                        "use a new key for a new message", detail={"run_id": run_id, "message_id": entry}), "key_reuse"
    return e, ""


def send_in(pipe: Pipeline, keys: Keys, msg: Message) -> None:
    """Queue an internal message (sent by a job that succeeded) on a pipeline, counted in its run and in the work.

    Never refused: refusing it would lose work already accepted; it counts against the work budget all the same,
    and against the memory budget from the next INFO reading.
    """
    pipe.xadd(keys.stream(), msg.to_fields())  # type: ignore[arg-type]
    pipe.hincrby(keys.run(msg.run_id), Run.active, 1)
    pipe.incr(keys.work())


def ensure_group(r: redis.Redis, keys: Keys) -> None:
    """Create the matchers' consumer group (from the start of the stream, so nothing sent earlier is missed)."""
    try:
        r.xgroup_create(keys.stream(), MATCHER_GROUP, id="0", mkstream=True)
    except redis.exceptions.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise


def trim(r: redis.Redis, keys: Keys) -> int:
    """Drop entries every matcher is done with: below the oldest pending entry and the last delivered one.

    Never `MAXLEN ~`: it drops delivered-but-unacknowledged and undelivered entries alike (measured: 4,000 of
    6,000 messages lost while every XADD returned OK).
    """
    stream = keys.stream()
    groups = r.xinfo_groups(stream)
    group = next((g for g in groups if to_str(g["name"]) == MATCHER_GROUP), None)
    if group is None:
        return 0
    last = to_str(group["last-delivered-id"])
    if last in ("0-0", "0"):
        return 0
    ms, seq = (int(x) for x in last.split("-"))
    min_id = f"{ms}-{seq + 1}"
    pending = r.xpending(stream, MATCHER_GROUP)
    if pending and pending.get("pending"):
        oldest = to_str(pending["min"])
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

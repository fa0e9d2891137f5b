"""Dead letters: the stream entries a matcher put aside because their dispatch failed alone, for a reason that
trying again would not change (a field that does not decode, a script error); processes/matcher.py says when an
entry is to blame. Each is kept as JSON in a capped list (`Keys.dead_letters`), newest first, with what it said and
why it failed; GET /api/v1/dead-letters, `angora dead-letters`, the UI and /metrics show them. Putting one aside
takes back what accepting it counted (store/lua/dead_letter.lua), so its run can end and the work budget is not
held by it; `resend` sends its message again once the cause is mended.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.errors import Conflict, InvalidInput, NotFound
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.messages import Message, check_run_id
from angora_rq.core.pressure import NO_BUDGET, Budget
from angora_rq.core.schema import Entry, Metrics
from angora_rq.store.bus import Sent, submit
from angora_rq.store.events import OUTBOX_CAP
from angora_rq.store.link import Link
from angora_rq.store.scripts import DEAD_LETTER

KEPT = 200  # records kept: the newest, each under about 2.7 KB (at most 2 % of a 25 MB Redis for all of them)
VALUE_LIMIT = 1000  # characters of an entry's field kept
FIELDS_LIMIT = 2000  # characters of all its fields kept: the fields past it are left out
ERROR_LIMIT = 500  # characters of the error kept


def record_of(entry: str, fields: Mapping[Any, Any], error: str, matcher: str, now: float) -> str:
    """A dead letter as kept: its id, its fields (each name cut to 64 characters and value to VALUE_LIMIT, in
    order until they hold FIELDS_LIMIT; `cut` says whether anything was left out), the error (cut to
    ERROR_LIMIT), the matcher and the time."""
    kept: dict[str, str] = {}
    room, cut = FIELDS_LIMIT, False
    for k, v in fields.items():
        name, value = _text(k), _text(v)
        room -= min(len(name), 64) + min(len(value), VALUE_LIMIT)
        if room < 0:
            cut = True
            break
        kept[name[:64]] = value[:VALUE_LIMIT]
        cut = cut or len(name) > 64 or len(value) > VALUE_LIMIT
    return json.dumps({"entry": entry, "fields": kept, "cut": cut, "error": error[:ERROR_LIMIT],
                       "matcher": matcher, "at": now}, separators=(",", ":"))


def run_of(fields: Mapping[Any, Any]) -> str:
    """The run id an entry names, or '' when it names none that Angora could have written."""
    raw = {_text(k): _text(v) for k, v in fields.items()}.get(Entry.run, "")
    try:
        return check_run_id(raw) if raw else ""
    except InvalidInput:  # a run id that does not check is one SEND never wrote
        return ""


def _text(value: Any) -> str:
    """A field name or value as text, whatever its bytes (a dead letter may not be UTF-8)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def dead_letter(link: Link, keys: Keys, entry: str, fields: Mapping[Any, Any], error: str, consumer: str,
                now: float, events_on: bool) -> bool:
    """Put `entry` aside (see the module's docstring) unless it is no longer pending for `consumer`; whether it
    was."""
    run_id = run_of(fields)
    call = DEAD_LETTER.bind(stream=keys.stream(), letters=keys.dead_letters(), metrics=keys.metrics(),
                            run=keys.run(run_id) if run_id else "", work=keys.work(), events=keys.events(),
                            runs=keys.runs(), outbox=keys.webhook_outbox(), accepted=keys.accepted(),
                            unsettled=keys.runs_unsettled(), group=MATCHER_GROUP, consumer=consumer, entry=entry,
                            record=record_of(entry, fields, error, consumer, now), cap=KEPT, run_id=run_id,
                            now=repr(now), run_prefix=keys.run(""), outbox_cap=OUTBOX_CAP,
                            events_on="1" if events_on else "")
    return bool(call.run(link))


def read_dead_letters(r: redis.Redis, keys: Keys, limit: int = KEPT) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` records put aside (decoded; a record that does not decode is shown as its text), and
    how many were put aside in all."""
    with r.pipeline(transaction=False) as p:
        p.lrange(keys.dead_letters(), 0, max(0, limit - 1))
        p.hget(keys.metrics(), Metrics.dead_letters)
        raw, total = p.execute()
    out = []
    for item in raw:
        try:
            out.append(json.loads(item))
        except ValueError:
            out.append({"record": to_str(item)})
    return out, int(total or 0)


def resend(r: redis.Redis, keys: Keys, entry: str, budget: Budget = NO_BUDGET) -> Sent:
    """Send dead letter `entry`'s message again, once its cause is mended: its topic and params, in a new run
    (origin `dead-letter:<entry>`), then take it off the list. A second resend of the same entry (two at once, or
    one whose record could not be taken off) gets the first answer and sends nothing. NotFound when no kept dead
    letter has that entry id; Conflict when what was kept cannot be sent as it was (cut, or not a valid message)."""
    raw, record = _find(r, keys, entry)
    fields = record.get("fields")
    fields = fields if isinstance(fields, dict) else {}
    if record.get("cut", True):
        raise Conflict(f"dead letter {entry} was kept cut short: send its message again yourself",
                       detail={"fields": fields})
    try:
        params = json.loads(fields[Entry.params]) if fields.get(Entry.params) else {}
        msg = Message.create(fields.get(Entry.topic), params, origin=f"dead-letter:{entry}")
    except (ValueError, InvalidInput) as e:
        raise Conflict(f"dead letter {entry} is not a message that can be sent: {e}") from None
    sent = submit(r, keys, msg, budget, key_name=keys.resend_idempotency(entry))
    r.lrem(keys.dead_letters(), 1, raw)
    return sent


def _find(r: redis.Redis, keys: Keys, entry: str) -> tuple[bytes, dict[str, Any]]:
    """The kept record of `entry` (raw and decoded); NotFound when none is kept."""
    for raw in r.lrange(keys.dead_letters(), 0, -1):
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("entry") == entry:
            return raw, record
    raise NotFound(f"no dead letter {entry[:80]!r} is kept (the newest {KEPT} are)")

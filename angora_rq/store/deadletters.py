"""Dead letters: the stream entries a matcher put aside because their dispatch failed alone, for a reason that
trying again would not change (a field that does not decode, a script error), while other entries went through.
Each is kept as JSON in a capped list (`Keys.dead_letters`), newest first, with what it said and why it failed;
GET /api/v1/dead-letters, `angora dead-letters`, the dashboard and /metrics show them. Putting one aside takes back
what accepting it counted (store/lua/dead_letter.lua), so its run can end and the work budget is not held by it.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.errors import InvalidInput
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.messages import check_run_id
from angora_rq.core.schema import Entry, Metrics
from angora_rq.store.events import OUTBOX_CAP
from angora_rq.store.link import Link
from angora_rq.store.scripts import DEAD_LETTER

KEPT = 200  # records kept: the newest, each under about 2.7 KB (at most 2 % of a 25 MB Redis for all of them)
VALUE_LIMIT = 1000  # characters of an entry's field kept
FIELDS_LIMIT = 2000  # characters of all its fields kept: the fields past it are left out
ERROR_LIMIT = 500  # characters of the error kept


def record_of(entry: str, fields: Mapping[Any, Any], error: str, matcher: str, now: float) -> str:
    """A dead letter as kept: its id, its fields (each name cut to 64 characters and value to VALUE_LIMIT, in
    order until they hold FIELDS_LIMIT), the error (cut to ERROR_LIMIT), the matcher and the time."""
    kept: dict[str, str] = {}
    room = FIELDS_LIMIT
    for k, v in fields.items():
        name, value = _text(k)[:64], _text(v)[:VALUE_LIMIT]
        room -= len(name) + len(value)
        if room < 0:
            break
        kept[name] = value
    return json.dumps({"entry": entry, "fields": kept, "error": error[:ERROR_LIMIT], "matcher": matcher,
                       "at": now}, separators=(",", ":"))


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

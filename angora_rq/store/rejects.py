"""Messages a matcher put aside: stream entries whose dispatch failed alone, for a reason that trying again would
not change (a field that does not decode, a script error), while other entries went through. Each is kept as JSON
in a capped list (`Keys.rejected`), newest first, with what it said and why it failed; GET /api/v1/rejected and
/metrics show them. Putting one aside takes back what accepting it counted (store/lua/reject.lua), so its run can
end and the work budget is not held by it.
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
from angora_rq.store.scripts import REJECT

KEPT = 200  # records kept: the newest, at most about 2.5 KB each (a 25 MB Redis keeps 2 % of itself for them)
VALUE_LIMIT = 1000  # characters of an entry's field kept
ERROR_LIMIT = 500  # characters of the error kept


def record_of(entry: str, fields: Mapping[Any, Any], error: str, matcher: str, now: float) -> str:
    """A rejected entry as kept: its id, fields (each value cut to VALUE_LIMIT characters, at most 8 fields), the
    error (cut to ERROR_LIMIT), the matcher and the time."""
    kept = {_text(k)[:64]: _text(v)[:VALUE_LIMIT] for k, v in list(fields.items())[:8]}
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
    """A field name or value as text, whatever its bytes (a rejected entry may not be UTF-8)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def reject(link: Link, keys: Keys, entry: str, fields: Mapping[Any, Any], error: str, consumer: str, now: float,
           events_on: bool) -> bool:
    """Put `entry` aside (see the module's docstring) unless it is no longer pending for `consumer`; whether it
    was."""
    run_id = run_of(fields)
    call = REJECT.bind(stream=keys.stream(), rejected=keys.rejected(), metrics=keys.metrics(),
                       run=keys.run(run_id) if run_id else "", work=keys.work(), events=keys.events(),
                       runs=keys.runs(), outbox=keys.webhook_outbox(), accepted=keys.accepted(),
                       unsettled=keys.runs_unsettled(), group=MATCHER_GROUP, consumer=consumer, entry=entry,
                       record=record_of(entry, fields, error, consumer, now), cap=KEPT, run_id=run_id,
                       now=repr(now), run_prefix=keys.run(""), outbox_cap=OUTBOX_CAP,
                       events_on="1" if events_on else "")
    return bool(call.run(link))


def read_rejected(r: redis.Redis, keys: Keys, limit: int = KEPT) -> tuple[list[dict[str, Any]], int]:
    """The newest `limit` records put aside (decoded; a record that does not decode is shown as its text), and
    how many were put aside in all."""
    with r.pipeline(transaction=False) as p:
        p.lrange(keys.rejected(), 0, max(0, limit - 1))
        p.hget(keys.metrics(), Metrics.rejected)
        raw, total = p.execute()
    out = []
    for item in raw:
        try:
            out.append(json.loads(item))
        except ValueError:
            out.append({"record": to_str(item)})
    return out, int(total or 0)

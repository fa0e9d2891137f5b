"""Webhooks in Redis: the outbox publish.lua fills, the deliveries due (a sorted set), each webhook's log.

One process drains them (the leading scheduler's deliverer thread, processes/webhooks.py), so reading and removing
need no lock; a leader that changes mid-step may deliver an event twice (receivers dedupe by its delivery id).
"""
from __future__ import annotations

import json
from typing import Any, Iterable, Optional

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.model import WebhookDef
from angora_rq.core.webhooks import Attempt, Delivery, backoff, log_entry, takes
from angora_rq.store.connection import Redis

BATCH = 100
LOG_KEPT = 200


def expand(r: Redis, keys: Keys, hooks: Iterable[WebhookDef], now: float) -> int:
    """Turn the oldest events of the outbox into one delivery per webhook that takes them; returns events read."""
    raw = r.lrange(keys.webhook_outbox(), -BATCH, -1)  # newest first: the oldest are at the end
    if not raw:
        return 0
    hooks = list(hooks)
    with r.pipeline() as p:
        for text in reversed(raw):
            event = json.loads(to_str(text))
            for hook in hooks:
                if takes(hook, str(event.get("event", ""))):
                    p.zadd(keys.webhook_due(), {Delivery.of(hook.name, event).to_json(): now})
        p.ltrim(keys.webhook_outbox(), 0, -(len(raw) + 1))
        p.execute()
    return len(raw)


def due(r: Redis, keys: Keys, now: float) -> list[tuple[str, Delivery]]:
    """The deliveries whose attempt is due: (as stored, parsed), oldest first."""
    found = r.zrangebyscore(keys.webhook_due(), "-inf", now, start=0, num=BATCH)
    return [(to_str(m), Delivery.from_json(to_str(m))) for m in found]


def record(r: Redis, keys: Keys, stored: str, d: Delivery, hook: Optional[WebhookDef], a: Attempt,
           now: float) -> str:
    """Log an attempt and retire it: done, due again after its backoff, or given up. Returns the outcome."""
    retries = hook.retries if hook is not None else 0
    if a.ok:
        outcome, next_at = "delivered", None
    elif d.attempt <= retries:
        outcome, next_at = "retrying", now + backoff(d.attempt)
    else:
        outcome, next_at = "failed", None
    with r.pipeline() as p:
        p.zrem(keys.webhook_due(), stored)
        if next_at is not None:
            p.zadd(keys.webhook_due(), {d.again().to_json(): next_at})
        p.lpush(keys.webhook_log(d.hook), json.dumps(log_entry(d, a, now, outcome, next_at)))
        p.ltrim(keys.webhook_log(d.hook), 0, LOG_KEPT - 1)
        p.execute()
    return outcome


def deliveries(r: Redis, keys: Keys, hooks: Iterable[WebhookDef], limit: int = 50) -> list[dict[str, Any]]:
    """Each webhook (secret never shown) with its latest delivery attempts, newest first; one round trip."""
    hooks = list(hooks)
    with r.pipeline(transaction=False) as p:
        for hook in hooks:
            p.lrange(keys.webhook_log(hook.name), 0, limit - 1)
        logs = p.execute()
    return [{**hook.to_json(), "deliveries": [json.loads(to_str(x)) for x in log]} for hook, log in zip(hooks, logs)]

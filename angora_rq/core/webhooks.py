"""Webhooks (pure): which events a webhook takes, its deliveries, their signature and their backoff."""
from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from typing import Any, Optional

from angora_rq.core.model import WebhookDef
from angora_rq.core.topics import topic_matches

SIGNATURE_HEADER = "X-Angora-Signature"  # "sha256=" + hex HMAC-SHA256 of the body with the webhook's secret
EVENT_HEADER = "X-Angora-Event"
DELIVERY_HEADER = "X-Angora-Delivery"
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0


def takes(hook: WebhookDef, topic: str) -> bool:
    """Whether `hook` wants event `topic`."""
    return any(topic_matches(p, topic) for p in hook.events)


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: what a receiver recomputes with the shared secret and compares."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`, after attempt `attempt` (1-based) failed: 1 s doubling, capped at 5 min."""
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (attempt - 1))


@dataclass(frozen=True)
class Delivery:
    """One event for one webhook: its attempts share the id, so a receiver can tell a retry from a new event."""

    id: str
    hook: str
    event: dict[str, Any]
    attempt: int = 1

    @classmethod
    def of(cls, hook: str, event: dict[str, Any]) -> "Delivery":
        """A first attempt."""
        return cls(uuid.uuid4().hex, hook, event)

    def body(self) -> bytes:
        """What is POSTed: the event, with the delivery's id."""
        return json.dumps({**self.event, "delivery": self.id}, separators=(",", ":")).encode()

    def to_json(self) -> str:
        """As kept in Redis while it is due."""
        return json.dumps({"id": self.id, "hook": self.hook, "event": self.event, "attempt": self.attempt})

    @classmethod
    def from_json(cls, text: str) -> "Delivery":
        """Inverse of to_json."""
        d = json.loads(text)
        return cls(d["id"], d["hook"], d["event"], int(d.get("attempt", 1)))

    def again(self) -> "Delivery":
        """The next attempt."""
        return Delivery(self.id, self.hook, self.event, self.attempt + 1)


@dataclass(frozen=True)
class Attempt:
    """How one POST went: the HTTP status (None when there was no answer), the error, the time it took."""

    status: Optional[int]
    error: str
    duration: float

    @property
    def ok(self) -> bool:
        """Delivered: a 2xx answer."""
        return self.status is not None and 200 <= self.status < 300


def log_entry(d: Delivery, a: Attempt, now: float, outcome: str, next_at: Optional[float]) -> dict[str, Any]:
    """A line of the webhook's delivery log (outcome: delivered, retrying or failed)."""
    return {"delivery": d.id, "event": d.event.get("event"), "run_id": d.event.get("run_id"), "attempt": d.attempt,
            "time": now, "status": a.status, "error": a.error, "duration": round(a.duration, 6), "outcome": outcome,
            "next": next_at}

"""Events (pure): every run and execution state change has a reserved topic under `angora.`.

A job listens to events through triggers that start with `angora.` (`angora.run.failed`, `angora.execution.*`):
a catch-all such as `#` does not make a job hear them. Webhooks name events the same way. Which topics some job
or webhook listens to (`wanted`) is written to Redis by the matcher, so the processes that change states publish
only those: with no listener, an event costs nothing but a look at a cached table.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence

from angora_rq.core.model import JobDef, WebhookDef
from angora_rq.core.schema import Event, Status
from angora_rq.core.topics import TriggerIndex, topic_matches

RESERVED = "angora."
RUN_STATES = ("started", "succeeded", "failed", "canceled")
EXECUTION_STATES = (Status.queued, Status.held, Status.delayed, Status.awaiting_approval, Status.running,
                    Status.succeeded, Status.failed, Status.killed, Status.replaying, Status.canceled,
                    Status.skipped, "approved", Status.rejected)
TOPICS = (*(Event.run + s for s in RUN_STATES), *(Event.execution + s for s in EXECUTION_STATES))
RUN_ENDS = tuple(Event.run + s for s in RUN_STATES[1:])  # what RUN_END publishes when a run has finished
JOBS, WEBHOOKS = "j", "w"  # who listens, in the wanted table


def is_event(topic: str) -> bool:
    """True for a topic in the reserved `angora.` space."""
    return topic.startswith(RESERVED)


def reserved_problem(topic: str) -> Optional[str]:
    """Why a job or schedule may not send `topic` (events are Angora's to publish), or None."""
    if is_event(topic):
        return f"topic {topic!r} is reserved: topics starting with 'angora.' are Angora's events"
    return None


def matching_events(pattern: str) -> list[str]:
    """The event topics a trigger or a webhook's `events` item matches."""
    return [t for t in TOPICS if topic_matches(pattern, t)] if is_event(pattern) else []


def listens(job: JobDef, topic: str) -> bool:
    """Whether `job` hears event `topic`: one of its triggers starting with `angora.` matches it."""
    return any(is_event(t) and topic_matches(t, topic) for t in job.triggers)


def listeners(jobs: Sequence[JobDef], topic: str) -> tuple[JobDef, ...]:
    """Of the jobs a topic's lookup found, those that hear it (all of them, for a topic that is no event)."""
    return tuple(jobs) if not is_event(topic) else tuple(j for j in jobs if listens(j, topic))


def wanted(index: TriggerIndex, webhooks: Iterable[WebhookDef]) -> dict[str, str]:
    """Event topic -> who listens ('j', 'w' or 'jw'), for the topics someone listens to."""
    hooks = list(webhooks)
    out: dict[str, str] = {}
    for topic in TOPICS:
        flags = (JOBS if listeners(index.lookup(topic), topic) else "") + (
            WEBHOOKS if any(topic_matches(p, topic) for h in hooks for p in h.events) else "")
        if flags:
            out[topic] = flags
    return out

"""Reads of the schedulers' state for the CLI, the API and the Schedules page (shaped by core/schedules.py)."""
from __future__ import annotations

import time
from typing import Any, Optional

import redis

from angora_rq.core.codec import to_str, to_str_dict
from angora_rq.core.keys import Keys
from angora_rq.core.model import Config
from angora_rq.core.schedules import leader_view, status_row
from angora_rq.core.schema import Run, Schedule


def leader_status(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Who leads the schedulers: {"holder", "token", "ttl"} (holder None when no scheduler runs). One round trip."""
    with r.pipeline(transaction=False) as p:
        p.get(keys.scheduler_lease())
        p.pttl(keys.scheduler_lease())
        value, pttl = p.execute()
    return leader_view(to_str(value), pttl)


def schedule_status(r: redis.Redis, keys: Keys, snapshot: Any, now: Optional[float] = None) -> list[dict[str, Any]]:
    """Every schedule of the definitions with its next fire time and what was last sent (times: unix seconds).

    `snapshot` is a Snapshot or a Config. Two round trips: the schedules' state, then their last runs.
    """
    config: Config = getattr(snapshot, "config", snapshot)
    now = time.time() if now is None else now
    schedules = list(config.schedules)
    with r.pipeline(transaction=False) as p:
        for s in schedules:
            p.hgetall(keys.schedule(s.name))
        states = [to_str_dict(raw) for raw in p.execute()]
    with r.pipeline(transaction=False) as p:
        for st in states:
            p.hget(keys.run(st.get(Schedule.run) or "-"), Run.active)
        actives = p.execute()
    return [status_row(s, st, to_str(active), now) for s, st, active in zip(schedules, states, actives)]

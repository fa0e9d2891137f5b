"""What the CLI, the API and the Schedules page show of the schedulers (pure: store/schedules.py reads the data)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

from angora_rq.core.model import ScheduleDef
from angora_rq.core.ticks import from_ts, next_fire


def leader_view(lease: str, pttl: Optional[int]) -> dict[str, Any]:
    """The lease "<holder> <token>" ("" when none) and its TTL in ms as {"holder", "token", "ttl"}."""
    if not lease:
        return {"holder": None, "token": None, "ttl": None}
    holder, _, token = lease.rpartition(" ")
    return {"holder": holder, "token": int(token) if token.isdigit() else None,
            "ttl": pttl / 1000 if pttl and pttl > 0 else None}


def skip_text(reason: str) -> Optional[str]:
    """Why a tick was skipped, as TICK recorded it (`overlap <run>`, `BUDGET <kind> <used> <limit>`), in words."""
    kind, _, rest = reason.partition(" ")
    if kind == "overlap":
        return f"overlap forbidden: run {rest} of the previous tick was still active"
    if kind == "BUDGET":
        what, used, limit = (rest.split() + ["?", "?"])[:3]
        if what == "work":
            return f"work budget used up: {used} of {limit} accepted messages and executions not finished"
        return "Redis memory budget used up"
    return reason or None


def status_row(s: ScheduleDef, st: Mapping[str, str], active: str, now: float) -> dict[str, Any]:
    """One schedule with its next fire time and what it last sent (`st`: its state hash; `active`: its last run's
    active count, "" when none); times are unix seconds."""
    try:
        nxt: Optional[float] = next_fire(s, from_ts(now)).timestamp()
    except ValueError:
        nxt = None
    last = int(st["last"]) / 1000 if st.get("last") else None
    return {
        **s.to_json(),
        "next_fire": nxt,
        "last_tick": last,
        "last_sent_at": float(st["sent_at"]) if st.get("sent_at") else None,
        "last_run": st.get("run") or None,
        "last_run_active": int(active or 0) > 0,
        "sent": int(st.get("sent") or 0),
        "skipped": int(st.get("skipped") or 0),
        "last_skipped": int(st["last_skipped"]) / 1000 if st.get("last_skipped") else None,
        "skip_reason": skip_text(st.get("skip_reason") or ""),
    }

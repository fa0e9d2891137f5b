"""`GET /healthz`: Redis reachable (200, else 503); to an authenticated caller, which matchers and workers beat.

Without credentials (when auth is on) the answer is the status word alone: host names and process ids are no
business of whoever can reach the port.
"""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, g, jsonify

from angora_rq.store.connection import RedisError
from angora_rq.core.codec import to_str
from angora_rq.core.metrics import ALIVE_SECONDS

bp = Blueprint("health", __name__)
ROLES = ("matcher", "worker")


def processes(beats: dict[Any, Any], now: float) -> dict[str, list[dict[str, Any]]]:
    """Heartbeat hash fields `<role>:<name>` -> unix time, grouped by role, newest first, with `alive`."""
    out: dict[str, list[dict[str, Any]]] = {role: [] for role in ROLES}
    for field, value in beats.items():
        role, _, name = to_str(field).partition(":")
        if role not in out or not name:
            continue
        try:
            beat = float(to_str(value))
        except ValueError:
            continue
        age = max(0.0, now - beat)
        out[role].append({"name": name, "last_beat": beat, "age": round(age, 3), "alive": age < ALIVE_SECONDS})
    for items in out.values():
        items.sort(key=lambda p: -p["last_beat"])
    return out


@bp.get("/healthz")
def healthz() -> Any:
    """200 when Redis answers (status `degraded` when no matcher or no worker is alive); 503 when it does not."""
    from angora_rq.web.context import angora

    ext = angora()
    now = time.time()
    details = not ext.settings.auth_enabled or g.get("angora_user") is not None
    try:
        beats = ext.r.hgetall(ext.keys.heartbeats())
    except RedisError as e:
        current_app.logger.warning("/healthz: Redis does not answer: %s", e)
        body = {"status": "unavailable", "time": now, "redis": {"ok": False, "error": str(e)[:300]},
                "matchers": [], "workers": []}
        return jsonify(body if details else {"status": "unavailable"}), 503
    procs = processes(beats, now)
    alive = all(any(p["alive"] for p in procs[role]) for role in ROLES)
    status = "ok" if alive else "degraded"
    if not details:
        return jsonify({"status": status}), 200
    return jsonify({
        "status": status,
        "time": now,
        "redis": {"ok": True, "error": None},
        "matchers": procs["matcher"],
        "workers": procs["worker"],
    }), 200

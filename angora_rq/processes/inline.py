"""Run one execution in this process (the slow path used when a stock `rq worker` picks an Angora job)."""
from __future__ import annotations

import time

import redis

from angora_rq.processes.janitor import claimed_from_hash
from angora_rq.commands.launch import command_spec
from angora_rq.commands.runner import run
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.store.state import HOST, State


def run_inline(r: redis.Redis, keys: Keys, settings: Settings, execution_id: str) -> str:
    """Claim a queued execution, run its command to the end, record it; return the final status."""
    ek = keys.execution(execution_id)
    with r.pipeline() as pipe:
        pipe.watch(ek)
        fields = {_s(a): _s(b) for a, b in pipe.hgetall(ek).items()}
        if fields.get("status") != "queued":
            pipe.reset()
            return fields.get("status", "missing")
        now = time.time()
        pipe.multi()
        pipe.hset(ek, mapping={"status": "running", "started": repr(now), "host": HOST, "worker": "rq"})
        pipe.hset(keys.run(fields["run"]), f"s:{fields['job']}", "running")
        pipe.execute()
    ex = claimed_from_hash(fields)
    outcome = run(command_spec(ex, settings, str(settings.data_dir / "spool")))
    with r.pipeline() as pipe:
        status = State(keys, settings).finalize(pipe, ex, outcome, time.time())
        pipe.execute()
    return status


def _s(v: object) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)

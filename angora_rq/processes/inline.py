"""Run one execution in this process (the slow path used when a stock `rq worker` picks an Angora job)."""
from __future__ import annotations

import os
import time

from angora_rq.store.connection import Redis
from angora_rq.core.codec import to_str_dict
from angora_rq.core.command import command_spec
from angora_rq.core.schema import Exec, Run, Status
from angora_rq.commands.runner import run
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.store.events import Events
from angora_rq.store.state import State, host_of, load_claimed


def run_inline(r: Redis, keys: Keys, settings: Settings, execution_id: str) -> str:
    """Claim a queued execution, run its command to the end, record it; return the final status."""
    ek = keys.execution(execution_id)
    with r.pipeline() as pipe:
        pipe.watch(ek)
        fields = to_str_dict(pipe.hgetall(ek))
        if fields.get(Exec.status) != Status.queued:
            pipe.reset()
            return fields.get(Exec.status, "missing")
        now = time.time()
        pipe.multi()
        pipe.hset(ek, mapping={Exec.status: Status.running, Exec.started: repr(now), Exec.host: host_of(settings),
                               Exec.worker: "rq"})
        pipe.hset(keys.run(fields[Exec.run]), Run.job_status + fields[Exec.job], Status.running)
        pipe.execute()
    ex = load_claimed(r, keys, execution_id, fields)
    outcome = run(command_spec(ex, settings, str(settings.data_dir / "spool"), os.environ))
    with r.pipeline() as pipe:
        status = State(keys, settings, Events(r, keys)).finalize(pipe, ex, outcome, time.time())
        pipe.execute()
    return status

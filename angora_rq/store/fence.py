"""Writes that must happen once: fenced on an execution still being `running` under a given worker."""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from angora_rq.core.codec import to_str_dict
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Exec, Status
from angora_rq.store.connection import Pipeline, Redis, WatchError
from angora_rq.store.scripts import NOTE_LATE, STILL_OURS

MAX_TRIES = 10


def write_if_running(r: Redis, execution_key: str, owner: Optional[str],
                     write: Callable[[Pipeline, dict[str, str]], None]) -> Optional[bool]:
    """Run `write(pipe, fields)` in one transaction if the execution is `running` (under `owner`, when given).

    WATCH, read, MULTI, EXEC: a retry after a lost reply, a janitor that took a dead worker's executions and the
    worker itself cannot all record the same end. True: written; False: not running under `owner` any more
    (recorded already, handed back, replayed, expired); None: the execution kept changing, try again later.
    """
    for _ in range(MAX_TRIES):
        with r.pipeline() as pipe:
            try:
                pipe.watch(execution_key)
                fields = to_str_dict(pipe.hgetall(execution_key))
                ours = owner is None or fields.get(Exec.worker) == owner
                if fields.get(Exec.status) != Status.running or not ours:
                    return False
                pipe.multi()
                write(pipe, fields)
                pipe.execute()
                return True
            except WatchError:
                continue
    return None


def note_late(r: Redis, execution_key: str, late: str, worker: str, ended: float) -> bool:
    """Keep a refused end (JSON) on its execution, which is left as recorded; False if the execution holds this
    very end (its worker recorded it, and did not hear so) or no longer exists."""
    return bool(NOTE_LATE.bind(exec=execution_key, late=late, worker=worker, ended=repr(ended)).run_borrowed(r))


def still_ours(keys: Keys, worker: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
    """The commands to send ahead of a worker's transaction of records (Link.execute_then's `before`): Redis
    aborts it unless each execution is still `running` under `worker` when it runs (lua/still_ours.lua).

    The worker's usual transaction relies on its heartbeat to know no janitor took its executions; a process
    stalled between that reckoning and the write (a starved CPU) would otherwise record over a replay.
    """
    guard = keys.worker_guard(worker)
    check = STILL_OURS.bind(guard=guard, worker=worker, exec_prefix=keys.execution(""), ids=list(ids))
    # EVAL with the text, not EVALSHA: a NOSCRIPT would leave the transaction unguarded.
    return [("WATCH", guard, *(keys.execution(x) for x in ids)), check.eval_command()]

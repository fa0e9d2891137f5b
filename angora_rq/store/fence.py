"""Writes that must happen once: fenced on an execution still being `running` under a given worker."""
from __future__ import annotations

from typing import Callable, Optional

from angora_rq.core.codec import to_str_dict
from angora_rq.store.connection import Pipeline, Redis, WatchError

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
                if fields.get("status") != "running" or (owner is not None and fields.get("worker") != owner):
                    return False
                pipe.multi()
                write(pipe, fields)
                pipe.execute()
                return True
            except WatchError:
                continue
    return None

"""The `$ANGORA_OUTPUT` files a killed worker leaves in its host's spool folder.

A worker reads and removes each command's outputs file when the command ends (commands/runner.py). A worker
killed (SIGKILL, a crash) while its commands ran never does: their executions are replayed under new ids, and the
files would stay for ever. Any worker of the host sweeps them: a file whose execution is no longer `running` (or is
gone from history) is nobody's to read any more.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.outputs import execution_of
from angora_rq.core.schema import Exec, Status
from angora_rq.store.connection import Redis

log = logging.getLogger(__name__)
MIN_AGE = 10.0  # seconds untouched before a file is looked at: never one a command is writing now
MAX_FILES = 1000  # looked at per sweep


def sweep_outputs(r: Redis, keys: Keys, spool: Path, now: float | None = None) -> int:
    """Remove the outputs files of executions that no longer run; how many were removed."""
    now = time.time() if now is None else now
    stale: dict[str, str] = {}  # file name -> its execution (core/outputs.py: any other name is not ours)
    try:
        with os.scandir(spool) as entries:
            for entry in entries:
                xid = execution_of(entry.name)
                if xid and (entry.is_file(follow_symlinks=False) or entry.is_symlink()) and \
                        now - entry.stat(follow_symlinks=False).st_mtime >= MIN_AGE:
                    stale[entry.name] = xid
                    if len(stale) >= MAX_FILES:
                        break
    except FileNotFoundError:
        return 0
    except OSError as e:  # unreadable: nothing to sweep here; the worker goes on
        log.warning("cannot sweep %s: %s", spool, e)
        return 0
    if not stale:
        return 0
    with r.pipeline(transaction=False) as p:
        for xid in stale.values():
            p.hget(keys.execution(xid), Exec.status)
        statuses = p.execute()
    removed = 0
    for name, status in zip(stale, statuses):
        if to_str(status) == Status.running:
            continue
        try:
            os.unlink(spool / name)
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d outputs file(s) of executions that no longer run from %s", removed, spool)
    return removed

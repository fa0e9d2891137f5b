"""The `$ANGORA_OUTPUT` files a killed worker leaves in its host's spool folder.

A worker reads and removes each command's outputs file when the command ends (commands/runner.py). A worker
killed (SIGKILL, a crash) while its commands ran never does: their executions are replayed under new ids, and the
files would stay for ever. Any worker of the host sweeps them: a file whose execution is no longer `running` (or is
gone from history) is nobody's to read any more.
"""
from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from angora_rq.core.keys import Keys
from angora_rq.core.schema import Exec, Status
from angora_rq.store.connection import Redis

log = logging.getLogger(__name__)
SUFFIX = ".output"
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}\.output$")  # <execution id>.output; any other name is not ours
MIN_AGE = 10.0  # seconds untouched before a file is looked at: never one a command is writing now
MAX_FILES = 1000  # looked at per sweep


def sweep_outputs(r: Redis, keys: Keys, spool: Path, now: float | None = None) -> int:
    """Remove the outputs files of executions that no longer run; how many were removed."""
    now = time.time() if now is None else now
    stale = []
    try:
        with os.scandir(spool) as entries:
            for entry in entries:
                if NAME.match(entry.name) and (entry.is_file(follow_symlinks=False) or entry.is_symlink()) and \
                        now - entry.stat(follow_symlinks=False).st_mtime >= MIN_AGE:
                    stale.append(entry.name)
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
        for name in stale:
            p.hget(keys.execution(name[:-len(SUFFIX)]), Exec.status)
        statuses = p.execute()
    removed = 0
    for name, status in zip(stale, statuses):
        if status is not None and status.decode() == Status.running:
            continue
        try:
            os.unlink(spool / name)
            removed += 1
        except OSError:
            pass
    if removed:
        log.info("removed %d outputs file(s) of executions that no longer run from %s", removed, spool)
    return removed

"""Process groups: signal one, list its members (every command and every supervised process leads its own)."""
from __future__ import annotations

import logging
import os
from typing import Optional

log = logging.getLogger(__name__)


def signal_group(pgid: Optional[int], sig: int) -> bool:
    """Send `sig` to a process group; True if it had members, False when it is gone (or not ours to signal)."""
    if pgid is None:
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as e:  # a member changed its user (setuid): nothing more we can do
        log.warning("cannot signal process group %s: %s", pgid, e)
        return False


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, _ppid, pgrp = f.read().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # it ended while we looked
        if int(pgrp) == pgid and state != "Z":
            found.append(int(entry))
    return found

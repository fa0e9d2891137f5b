"""Whether Redis came back without Angora's data: a loss is logged and counted, never silent.

Every role marks the data with its layout as it starts (store/layout.py). A Redis that restarts without persistence,
a replica promoted before it synced, or a flush, takes the mark with everything else; the first role to reach Redis
again after the outage finds it gone (SET NX: one role of all of them), says so and counts it.
"""
from __future__ import annotations

import logging
import time

from angora_rq.core.keys import Keys
from angora_rq.store import layout
from angora_rq.store.connection import UNREACHABLE, Redis, RedisError

log = logging.getLogger(__name__)


class DataWatch:
    """`check()` once Redis answers after an outage, and while `pending` (a check Redis refused: read-only during a
    failover, out of memory); the mark is only missed when this process saw it before."""

    def __init__(self, r: Redis, keys: Keys, who: str) -> None:
        self.r, self.keys, self.who = r, keys, who
        self.pending = False
        try:
            self.seen = layout.marked(r, keys)
        except UNREACHABLE:  # Redis down as the role starts: the first check marks the data, silently
            self.seen = False

    def check(self) -> bool:
        """Mark the data again if its mark is gone; True (logged, counted) when that means the data was lost.
        Redis out of reach raises (the caller's outage); any other refusal leaves the check pending."""
        self.pending = True
        try:
            gone = layout.mark_again(self.r, self.keys)
        except UNREACHABLE:
            raise
        except RedisError as e:
            log.debug("%s: the data's mark could not be checked (%s); again at the next step", self.who, e)
            return False
        self.pending = False
        lost, self.seen = gone and self.seen, True
        if lost:
            layout.count_loss(self.r, self.keys, time.time())
            log.error("%s: Redis came back without Angora's data under prefix %r (the layout mark every role sets "
                      "is gone): it restarted without persistence (no AOF), a replica that had not synced was "
                      "promoted, or it was flushed. What it held is lost: accepted messages, queued work, history; "
                      "commands running now record their ends into the new data", self.who, self.keys.prefix)
        return lost

"""A worker's ends in doubt are written one by one, fenced: one that cannot be written (a lasting error) holds up
none of the others; against the real redis-server."""
from __future__ import annotations

import time
from pathlib import Path

import redis

from angora_rq.commands.runner import Outcome
from angora_rq.core.codec import to_str_dict
from angora_rq.core.keys import Keys
from angora_rq.core.model import JobDef
from angora_rq.core.settings import Settings
from angora_rq.processes.outbox import Outbox, Unrecorded
from angora_rq.store.state import State, load_claimed
from test_cancel import create, status
from test_pause import claim


def test_an_end_that_cannot_be_recorded_holds_up_no_other(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    state = State(keys, Settings(prefix=keys.prefix))
    bad = create(r, keys, JobDef("bad", ("go",), ("true",), queue="q1"), "r1")
    good = create(r, keys, JobDef("good", ("go",), ("true",), queue="q1"), "r2")
    assert claim(r, keys, ("q1",)) == [bad, good]  # both running on worker w1
    outbox = Outbox(r, keys, state, tmp_path, "w1")
    now = time.time()
    for xid in (bad, good):  # the older one first, as the worker keeps them
        ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
        outbox.add(Unrecorded(xid, "w1", Outcome(0, None, "exit", now - 1, now, 1.0, ""), ex=ex, checked=True))
    r.delete(keys.execution(bad))
    r.set(keys.execution(bad), "not a hash")  # its fence's read fails: WRONGTYPE, at every try
    outbox.record_checked(now)
    assert status(r, keys, good) == "succeeded" and r.get(keys.execution(bad)) == b"not a hash"
    assert [u.xid for u in outbox.items] == [bad]  # kept, to be tried again

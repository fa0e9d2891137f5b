"""DataWatch: the data's layout mark gone after an outage is said and counted once; a refused check waits."""
from __future__ import annotations

from typing import Any

import fakeredis
import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.schema import Metrics
from angora_rq.processes.datawatch import DataWatch
from angora_rq.store import layout


class ReadOnlyOnce(fakeredis.FakeRedis):
    """A replica for one SET (a role that reached the old primary during a failover), then the primary."""

    refuse = True

    def set(self, *args: Any, **kwargs: Any) -> Any:
        if self.refuse:
            self.refuse = False
            raise redis.exceptions.ReadOnlyError("You can't write against a read only replica.")
        return super().set(*args, **kwargs)


def test_a_mark_gone_is_said_and_counted_once(caplog: pytest.LogCaptureFixture) -> None:
    r, keys = fakeredis.FakeRedis(), Keys("dw")
    layout.check(r, keys)  # what a role does as it starts
    watch, other = DataWatch(r, keys, "worker w1"), DataWatch(r, keys, "matcher m1")
    assert watch.seen and not watch.check()
    r.flushall()  # the Redis that came back
    with caplog.at_level("ERROR"):
        assert watch.check() and not other.check()  # the first to mark the data again says it, the other not
    assert caplog.text.count("Redis came back without Angora's data under prefix 'dw'") == 1
    assert int(r.hget(keys.metrics(), Metrics.data_lost) or 0) == 1 and r.hget(keys.metrics(), Metrics.data_lost_at)


def test_a_process_that_never_saw_the_mark_marks_the_data_silently() -> None:
    r, keys = fakeredis.FakeRedis(), Keys("dw")
    watch = DataWatch(r, keys, "worker w1")  # started while Redis was down, say: nothing to compare with
    assert not watch.seen and not watch.check()
    assert layout.marked(r, keys) and r.hget(keys.metrics(), Metrics.data_lost) is None
    r.flushall()
    assert watch.check()  # from then on it compares


def test_a_refused_check_stays_pending_until_it_goes_through() -> None:
    r, keys = ReadOnlyOnce(), Keys("dw")
    r.refuse = False
    layout.check(r, keys)
    watch = DataWatch(r, keys, "worker w1")
    r.flushall()
    r.refuse = True
    assert not watch.check() and watch.pending
    assert watch.check() and not watch.pending

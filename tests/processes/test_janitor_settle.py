"""The janitors' settle of the run indexes on a real redis-server: one janitor at a time, a bounded part per step."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis

import angora_rq.processes.janitor as janitor_module
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import Janitor
from angora_rq.store.runindex import RunIndex

RUNS = 1200  # unsettled runs: past hash-max-ziplist-entries (512 here) the hash is a hashtable, scanned in parts


def _unsettled(r: redis.Redis, keys: Keys, n: int = RUNS) -> None:
    """`n` unsettled runs whose hashes are gone (trimmed): a settle just takes them out of `unsettled`."""
    r.hset(keys.runs_unsettled(), mapping={f"run{i}": 1 for i in range(n)})
    r.set(keys.runs_index_built(), 1)


def test_a_settle_part_reads_about_as_many_runs_as_asked_and_says_where_to_go_on(
        r: redis.Redis, keys: Keys) -> None:
    _unsettled(r, keys)
    index = RunIndex(r, keys, chunk=50)
    cursor, _ = index.settle_part(0, 50)
    left = r.hlen(keys.runs_unsettled())
    assert cursor != 0 and 0 < left <= RUNS - 50
    parts = 1
    while cursor:
        cursor, _ = index.settle_part(cursor, 50)
        parts += 1
    assert r.hlen(keys.runs_unsettled()) == 0 and parts > 2


def test_one_janitor_settles_at_a_time_and_goes_on_over_its_next_steps(
        r: redis.Redis, keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two janitors step together: the first takes the settle's lease and reads a part, the second reads nothing;
    the first's next steps finish the pass without asking for the lease again."""
    monkeypatch.setattr(janitor_module, "SETTLE_STEP", 50)
    monkeypatch.setattr(janitor_module, "SETTLE_CHUNK", 50)
    _unsettled(r, keys)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path)
    first, second = Janitor(r, keys, settings), Janitor(r, keys, settings)
    now = time.time()
    first.settle(now)
    after_first = r.hlen(keys.runs_unsettled())
    assert 0 < after_first <= RUNS - 50 and r.exists(keys.runs_settler())
    second.settle(now)
    assert r.hlen(keys.runs_unsettled()) == after_first  # the lease is held: it read nothing
    steps = 1
    while r.hlen(keys.runs_unsettled()):
        first.settle(now)
        steps += 1
        assert steps < RUNS, "the pass does not end"
    assert steps > 2
    r.hset(keys.runs_unsettled(), "late", 1)
    first.settle(now + 1)  # the pass is over: the next is SETTLE_EVERY after the last one started
    assert r.hlen(keys.runs_unsettled()) == 1


def test_a_janitor_settles_again_once_the_lease_has_expired(
        r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    _unsettled(r, keys, 3)
    settings = Settings(prefix=keys.prefix, data_dir=tmp_path)
    janitor = Janitor(r, keys, settings)
    r.set(keys.runs_settler(), "another janitor", px=int(janitor_module.SETTLE_LEASE * 1000))
    now = time.time()
    janitor.settle(now)
    assert r.hlen(keys.runs_unsettled()) == 3
    r.delete(keys.runs_settler())  # expired
    janitor.settle(now + janitor_module.SETTLE_EVERY)
    assert r.hlen(keys.runs_unsettled()) == 0

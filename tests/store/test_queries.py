"""Queries on real Redis: the runs list's filters (through the run indexes: runs recorded before them are indexed on
the first filtered read)."""
from __future__ import annotations

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.schema import Defs, Run
from angora_rq.store.queries import Queries


def test_filtered_runs_list_reads_chunks_and_finds_matches_past_the_first(r: redis.Redis, keys: Keys) -> None:
    with r.pipeline() as p:
        for i in range(60):  # newest first: runs 59..0; only every 7th has the job 'load' failed
            rid = f"run{i:02}"
            p.zadd(keys.runs(), {rid: 1000.0 + i})
            status = "failed" if i % 7 == 0 else "succeeded"
            p.hset(keys.run(rid), mapping={Run.created: 1000.0 + i, Run.active: 0, Run.plan: "p",
                                           Run.config_version: "v", "s:load": status})
        p.hset(keys.definitions("v"), Defs.plan + "p", '{"jobs": ["load"], "parents": {}}')
        p.execute()
    total, runs = Queries(r, keys).runs(limit=5, status="failed", job="load")
    assert total == 9  # the matches, not every run
    assert [x["run_id"] for x in runs] == ["run56", "run49", "run42", "run35", "run28"]
    _, rest = Queries(r, keys).runs(limit=50, status="failed")
    assert [x["run_id"] for x in rest] == [f"run{i:02}" for i in range(56, -1, -7)]

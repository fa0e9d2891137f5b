"""Run plans in Redis: a run keeps its plan's ref (Run.plan), the JSON is recorded once per definitions version."""
from __future__ import annotations

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.core.runs import PLAN_JSON
from angora_rq.core.schema import Defs, Run


def with_plans(r: redis.Redis, keys: Keys, runs: list[dict[str, str]]) -> list[dict[str, str]]:
    """Runs' hashes (decoded) with each one's plan JSON under PLAN_JSON, read from its definitions version in one
    round trip (a run keeps only its plan's ref)."""
    refs = sorted({(h.get(Run.config_version, ""), h[Run.plan]) for h in runs if h.get(Run.plan)})
    if refs:
        with r.pipeline(transaction=False) as p:
            for version, ref in refs:
                p.hget(keys.definitions(version), Defs.plan + ref)
            plans = dict(zip(refs, map(to_str, p.execute())))
        for h in runs:
            if h.get(Run.plan):
                h[PLAN_JSON] = plans[(h.get(Run.config_version, ""), h[Run.plan])]
    return runs

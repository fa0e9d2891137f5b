"""What a role reads of its Redis' setup as it starts: whether a full Redis deletes keys, and whether it writes an
AOF (core/redis_setup.py says what each means)."""
from __future__ import annotations

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.redis_setup import eviction_warning, persistence_warning


def setup_warnings(r: redis.Redis) -> list[str]:
    """One line per way this Redis can lose Angora's accepted work (INFO memory, stats and persistence in one round
    trip); none when it refuses INFO (some managed Redis), as nothing can be told then."""
    with r.pipeline(transaction=False) as p:
        p.info("memory")
        p.info("stats")
        p.info("persistence")
        memory, stats, persistence = p.execute(raise_on_error=False)
    out = []
    if not isinstance(memory, Exception):
        evicting = eviction_warning(to_str(memory.get("maxmemory_policy") or ""))
        evicted = 0 if isinstance(stats, Exception) else int(stats.get("evicted_keys") or 0)
        if evicting:
            out.append(f"{evicting} (it has evicted {evicted} keys since it started)" if evicted else evicting)
    if not isinstance(persistence, Exception):
        aof = persistence_warning(bool(int(persistence.get("aof_enabled", 1))))
        if aof:
            out.append(aof)
    return out


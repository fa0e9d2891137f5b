"""What a role reads of its Redis' setup as it starts: whether a full Redis deletes keys, whether it writes an AOF,
and, where it matters, its replicas and how it syncs them (core/redis_setup.py says what each means)."""
from __future__ import annotations

import redis

from angora_rq.core.codec import to_str
from angora_rq.core.redis_setup import eviction_warning, persistence_warning, replica_warning, sync_delay_warning
from angora_rq.core.settings import SENTINEL_SCHEME, Settings


def setup_warnings(r: redis.Redis, settings: Settings) -> list[str]:
    """One line per way this Redis can lose Angora's accepted work or refuse it (INFO memory, stats, persistence and
    replication in one round trip; CONFIG under Sentinel); none for what it refuses to tell (some managed Redis)."""
    with r.pipeline(transaction=False) as p:
        p.info("memory")
        p.info("stats")
        p.info("persistence")
        p.info("replication")
        memory, stats, persistence, replication = p.execute(raise_on_error=False)
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
    if not isinstance(replication, Exception):
        replicas = replica_warning(settings.replicated, int(replication.get("connected_slaves") or 0))
        if replicas:
            out.append(replicas)
    sentinel = settings.effective_redis_url.startswith(SENTINEL_SCHEME)
    if sentinel:
        delay = _sync_delay(r)
        if delay:
            out.append(delay)
    return out


def _sync_delay(r: redis.Redis) -> str:
    """The sync-delay warning for this primary ('' when none, or when CONFIG is refused)."""
    try:
        got = r.config_get("repl-diskless-sync*")
    except redis.RedisError:
        return ""
    diskless = to_str(got.get("repl-diskless-sync") or "")
    delay = int(to_str(got.get("repl-diskless-sync-delay") or 0))
    return sync_delay_warning(True, diskless, delay) or ""

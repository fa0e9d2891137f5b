"""What a Redis must be set up to keep Angora's guarantees, and what to say when it is not (pure: the reading is
store/redis_setup.py's)."""
from __future__ import annotations

from typing import Optional

# The only maxmemory-policy under which a full Redis refuses writes instead of deleting keys. Under any other, a
# cache sharing the Redis deletes Angora's accepted work without an error once it fills it: with allkeys-lru and a
# 16 MB maxmemory, 268-394 of the 505 keys of 500 accepted messages (tests/e2e/test_redis_setup.py); under
# volatile-* the keys with a TTL go: heartbeats, leases, idempotency keys.
SAFE_POLICY = "noeviction"


def eviction_warning(policy: str) -> Optional[str]:
    """What to do about a Redis that deletes keys when full (a maxmemory-policy other than noeviction); None when
    it refuses writes instead, or does not say."""
    if not policy or policy == SAFE_POLICY:
        return None
    which = ("any of Angora's: accepted messages, runs, queues" if policy.startswith("allkeys") else
             "Angora's with a time to live among them: workers' heartbeats, leases, idempotency keys")
    return (f"Redis' maxmemory-policy is {policy}: once Redis is full it deletes keys without an error, {which}; "
            "set it to noeviction (`CONFIG SET maxmemory-policy noeviction`, or your provider's setting), under "
            "which Angora refuses new messages with 503 instead")


def persistence_warning(aof_enabled: bool) -> Optional[str]:
    """What to do about a Redis that writes no AOF (a restart loses what came after its last snapshot); None when
    it writes one."""
    if aof_enabled:
        return None
    return ("Redis writes no append-only file (appendonly no): if it restarts, every message accepted and every "
            "end recorded since its last snapshot is lost; set `appendonly yes` with `appendfsync everysec` (the "
            "embedded Redis' setting), or accept that loss knowingly")


def replica_warning(replicated: bool, replicas: int) -> Optional[str]:
    """ANGORA_DURABILITY=replicated on a primary without a replica connected: every step waits for one in vain."""
    if not replicated or replicas > 0:
        return None
    return ("ANGORA_DURABILITY=replicated, but Redis has no replica connected: /send answers 503, and workers and "
            "matchers slow to one batch per ANGORA_DURABILITY_TIMEOUT, until one is (start the replica, or set "
            "ANGORA_DURABILITY=primary)")


def sync_delay_warning(sentinel: bool, diskless: str, delay: int) -> Optional[str]:
    """Under Sentinel, a primary that syncs its replicas without disk after a delay (Redis 7's default: 5 s)."""
    if not sentinel or diskless != "yes" or delay <= 0:
        return None
    return (f"Redis syncs a new replica without disk only after repl-diskless-sync-delay ({delay} s): a node that "
            "comes back stays empty that long, and a second failover that promotes it loses every write (measured: "
            "0 of 2,000 confirmed keys kept, 9 times in 9; docs/scaling.md); set repl-diskless-sync-delay 0 on "
            "every data node")

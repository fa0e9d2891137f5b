"""Reload requests in Redis: `angora reload` and the API bump a counter that every process's Reloader watches."""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

import redis

from angora_rq.core.errors import Unavailable
from angora_rq.core.keys import Keys

REQUESTS = "reload"  # field of keys.config(): how many reloads were requested, ever


def request_reload(r: redis.Redis, keys: Keys, now: Optional[float] = None) -> int:
    """Ask every matcher, scheduler and web process (on every host) to read its definition files again."""
    with r.pipeline() as p:
        p.hincrby(keys.config(), REQUESTS, 1)
        p.hset(keys.config(), "reload_requested_at", repr(time.time() if now is None else now))
        count, _ = p.execute()
    return int(count)


def reload_requests(r: redis.Redis, keys: Keys) -> Callable[[], Any]:
    """What a Reloader calls to read the request counter (one HGET); any Redis error raises Unavailable."""
    def read() -> Any:
        try:
            return r.hget(keys.config(), REQUESTS)
        except redis.exceptions.RedisError as e:
            raise Unavailable(f"Redis: {e}") from e
    return read

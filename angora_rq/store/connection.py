"""Connecting to Redis, and turning Redis trouble into Angora errors."""
from __future__ import annotations

import contextlib
from typing import Iterator

import redis

from angora_rq.core.errors import Unavailable
from angora_rq.core.settings import Settings


def connect(settings: Settings, pool_size: int = 0, **kwargs: object) -> redis.Redis:
    """A client for the configured Redis (REDIS_URL, else the embedded server's socket); does not connect yet.

    pool_size: at most that many connections, a caller waiting up to 10 s for one (the web role, whose threads
    are many: see web/server.py); else redis-py's pool, which fails past 100.
    """
    opts: dict = {"health_check_interval": 30, "socket_connect_timeout": 5}
    opts.update(kwargs)
    if pool_size:
        pool = redis.BlockingConnectionPool.from_url(settings.effective_redis_url, max_connections=pool_size,
                                                     timeout=10, **opts)
        return redis.Redis(connection_pool=pool)
    return redis.Redis.from_url(settings.effective_redis_url, **opts)


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Map Redis being down, out of memory or read-only to `Unavailable` (HTTP 503)."""
    try:
        yield
    except redis.exceptions.ConnectionError as e:
        raise Unavailable(f"Redis is not reachable: {e}") from e
    except redis.exceptions.TimeoutError as e:
        raise Unavailable(f"Redis did not answer in time: {e}") from e
    except (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError) as e:
        # redis-py strips the error code from these (e.g. "-OOM ..." arrives as OutOfMemoryError("command not ...")).
        raise Unavailable(f"Redis refused the write: {e}") from e
    except redis.exceptions.ResponseError as e:
        text = str(e)
        # Inside a Lua script the code stays in the text: "... -OOM command not allowed ...".
        if text.startswith(("OOM", "READONLY", "MISCONF", "LOADING", "BUSY")) or "OOM command not allowed" in text:
            raise Unavailable(f"Redis refused the write: {text}") from e
        raise

"""Connecting to Redis, and turning Redis trouble into Angora errors.

The only layer that imports redis is the store: the processes, the web app and the CLI take the client type and
the exception classes they catch from here.
"""
from __future__ import annotations

import contextlib
import re
import ssl
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

import redis
from redis.client import Pipeline
from redis.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError  # not the builtin ConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError, WatchError

from angora_rq.core.errors import AngoraError, Unavailable
from angora_rq.core.settings import SENTINEL_SCHEME, Settings, parse_sentinel_url, redacted

__all__ = ["Redis", "Pipeline", "RedisError", "RedisConnectionError", "ResponseError", "NoScriptError", "WatchError",
           "UNREACHABLE", "connect", "client_for", "ping", "unavailable", "lasting", "redis_errors", "first_contact"]

Redis = redis.Redis
SENTINEL_TIMEOUT = 1.0  # seconds to wait for one sentinel before asking the next
# Redis out of reach: restarting, shut down, loading its AOF (BusyLoadingError is a ConnectionError), a connection
# reset or refused, no answer in time. What a loop waits out (processes/outage.py), and a 503 over HTTP.
UNREACHABLE = (RedisConnectionError, redis.exceptions.TimeoutError)
# redis-py strips the error code from these (e.g. "-OOM ..." arrives as OutOfMemoryError("command not ...")) ...
REFUSALS = (redis.exceptions.OutOfMemoryError, redis.exceptions.ReadOnlyError, redis.exceptions.BusyLoadingError)
# ... but not from MISCONF or BUSY, and an error raised inside a Lua script may carry it in its text: "... -OOM ...".
# Whole words only: BUSYGROUP and BUSYKEY are ordinary errors of a command, not a server that refuses work.
REFUSED = re.compile(r"(^|-)(OOM|READONLY|MISCONF|LOADING|BUSY)\b|OOM command not allowed")


def connect(settings: Settings, pool_size: int = 0, **kwargs: object) -> redis.Redis:
    """A client for the configured Redis (REDIS_URL, else the embedded server's socket); does not connect yet.

    pool_size: at most that many connections, a caller waiting up to 10 s for one (the web role, whose threads
    are many: see web/server.py); else redis-py's pool, which fails past 100.
    """
    # A read that waits longer than socket_timeout is a Redis out of reach (every blocking call Angora makes waits
    # a second at most): without it, a connection whose packets are dropped (a partition) would hang for ever.
    opts: dict = {"health_check_interval": 30, "socket_connect_timeout": 5, "socket_timeout": 10}
    opts.update(kwargs)
    return client_for(settings.effective_redis_url, pool_size, **opts)


def client_for(url: str, pool_size: int = 0, **opts: Any) -> redis.Redis:
    """A client for `url`: redis://, rediss://, unix://, or redis+sentinel://, whose connections go to the primary
    the sentinels name when each connects (so a connection made after a failover reaches the new primary).
    pool_size: see `connect` (redis-py has no blocking pool for sentinels: theirs grows as needed)."""
    if urlsplit(url).scheme != SENTINEL_SCHEME:
        if pool_size:
            pool = redis.BlockingConnectionPool.from_url(url, max_connections=pool_size, timeout=10, **opts)
            return redis.Redis(connection_pool=pool)
        return redis.Redis.from_url(url, **opts)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs={
        "socket_timeout": SENTINEL_TIMEOUT, "socket_connect_timeout": SENTINEL_TIMEOUT,
        **({"password": target.sentinel_password} if target.sentinel_password else {})})
    return sentinel.master_for(target.service, redis_class=redis.Redis, db=target.db, username=target.username,
                               password=target.password, **opts)


def ping(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at `url`."""
    client = client_for(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (RedisError, OSError):
        return False
    finally:
        client.close()


def unavailable(e: BaseException) -> Optional[Unavailable]:
    """The `Unavailable` (HTTP 503) a Redis error means, or None when it is not Redis being unable to serve.

    Unavailable: not reachable (connection refused or lost, authentication, still loading its data), no answer in
    time, out of memory (maxmemory with noeviction: writes fail while reads work), read-only (a replica), MISCONF
    (cannot persist) or BUSY (running a long script). Any other error is a bug or a bad request, left as it is.
    """
    if isinstance(e, RedisConnectionError):  # BusyLoadingError (LOADING) is one too
        return Unavailable(f"Redis is not reachable: {e}")
    if isinstance(e, redis.exceptions.TimeoutError):
        return Unavailable(f"Redis did not answer in time: {e}")
    if isinstance(e, REFUSALS) or (isinstance(e, ResponseError) and REFUSED.search(str(e))):
        oom = isinstance(e, redis.exceptions.OutOfMemoryError) or "OOM" in str(e)
        return Unavailable(f"Redis {'is out of memory' if oom else 'refused the command'}: {e}")
    return None


# Errors of a Redis that cannot serve for now, beside connection errors and `unavailable`: a consumer group gone (a
# Redis that came back empty), permissions, replicas, a script to load again.
WAIT_OUT = re.compile(r"\b(NOGROUP|NOPERM|NOAUTH|NOREPLICAS|MASTERDOWN|NOSCRIPT|TRYAGAIN|CLUSTERDOWN)\b")


def lasting(e: BaseException) -> bool:
    """Whether a step that failed with `e` would fail the same way if tried again (data that does not decode, a
    script's error), rather than Redis being out of reach or refusing work for now (`unavailable`, a replica not
    confirming, WAIT_OUT): what the matcher and the worker set aside instead of retrying for ever."""
    if isinstance(e, (UNREACHABLE, Unavailable)) or unavailable(e) is not None:
        return False
    return not (isinstance(e, ResponseError) and WAIT_OUT.search(str(e)))


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Raise `unavailable(e)` for Redis being down, out of memory, read-only...; other errors pass unchanged."""
    try:
        yield
    except RedisError as e:
        mapped = unavailable(e)
        if mapped is None:
            raise
        raise mapped from e


TLS_HELP = ("for a self-signed certificate (Heroku Redis, many managed servers) set ANGORA_REDIS_TLS_VERIFY=none, "
            "or give the CA that signed it with ANGORA_REDIS_TLS_CA=/path/to/ca.pem")


def first_contact(r: redis.Redis, url: str) -> Optional[str]:
    """PING once, before a process starts its work.

    Settings that cannot work raise AngoraError saying what to do (a certificate not trusted, TLS spoken to a
    plain port, a password refused); a server that does not answer (yet) only returns a warning, as the
    processes' loops retry until it does.
    """
    where = redacted(url)
    try:
        r.ping()
    except redis.exceptions.AuthenticationError as e:  # NOAUTH, WRONGPASS
        raise AngoraError(f"Redis at {where} refused the credentials ({e}): give the password in REDIS_URL "
                          "(redis://:PASSWORD@host:port)") from e
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as e:
        cause = e.__cause__
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise AngoraError(f"Redis at {where}: the server's TLS certificate is not trusted "
                              f"({cause.verify_message}); {TLS_HELP}") from e
        if isinstance(cause, ssl.SSLError):
            raise AngoraError(f"Redis at {where}: TLS failed ({cause.reason or cause}); rediss:// needs a TLS "
                              "port, redis:// a plain one") from e
        return f"Redis at {where} does not answer yet ({e}); retrying"
    return None

"""Connecting to Redis, and turning Redis trouble into Angora errors."""
from __future__ import annotations

import contextlib
import ssl
from typing import Iterator, Optional

import redis

from angora_rq.core.errors import AngoraError, Unavailable
from angora_rq.core.settings import Settings, redacted


def connect(settings: Settings, **kwargs: object) -> redis.Redis:
    """A client for the configured Redis (REDIS_URL, else the embedded server's socket); does not connect yet."""
    opts: dict = {"health_check_interval": 30, "socket_connect_timeout": 5}
    opts.update(kwargs)
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

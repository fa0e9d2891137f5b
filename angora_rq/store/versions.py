"""Which definitions version the matchers run, published in Redis so that the web role follows it."""
from __future__ import annotations

from typing import Any, Optional

from angora_rq.core.keys import Keys
from angora_rq.store.connection import Redis
from angora_rq.store.link import borrowed

RUNNING_SECONDS = 60  # gone a minute after the last matcher stops publishing it


def publish_running_version(conn: Any, keys: Keys, version: str) -> None:
    """Say (on a client or a pipeline) which definitions version this matcher dispatches with."""
    conn.set(keys.running_version(), version, ex=RUNNING_SECONDS)


def running_version(r: Redis, keys: Keys) -> Optional[str]:
    """The definitions version the matchers run (the last one published), or None when no matcher runs."""
    with borrowed(r) as link:
        value = link.call("GET", keys.running_version())
    return value.decode() if isinstance(value, bytes) else value

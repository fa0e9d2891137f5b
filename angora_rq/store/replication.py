"""ANGORA_DURABILITY=replicated: a step's writes count as done once a replica has them too (Redis' WAIT).

Redis replicates asynchronously: a primary that dies takes with it what it acknowledged but had not yet sent to
its replica, and Sentinel promotes that replica. `WAIT 1 <timeout>`, sent on the connection that wrote, returns
once one replica has every write made so far on that connection (or the timeout passed): after it, a failover no
longer loses them.
"""
from __future__ import annotations

from typing import Any, Optional

from angora_rq.core.errors import Unavailable
from angora_rq.core.settings import Settings

REPLICAS = 1


class NotReplicated(Unavailable):
    """Raised when no replica confirmed a step's writes in time (they may still be on the primary alone)."""


def wait_command(settings: Settings) -> Optional[tuple[Any, ...]]:
    """The WAIT to send after a step's writes, or None when the primary alone is enough."""
    if not settings.replicated:
        return None
    return ("WAIT", REPLICAS, max(1, int(settings.durability_timeout * 1000)))


def confirm(reply: Any, what: str) -> None:
    """Raise NotReplicated unless WAIT's reply says enough replicas have the writes."""
    if isinstance(reply, Exception):
        raise NotReplicated(f"Redis did not confirm that a replica has {what}: {reply}") from reply
    if int(reply) < REPLICAS:
        raise NotReplicated(f"no replica confirmed {what} in time (ANGORA_DURABILITY_TIMEOUT); it may be on the "
                            "primary alone", detail={"replicas": int(reply), "wanted": REPLICAS})

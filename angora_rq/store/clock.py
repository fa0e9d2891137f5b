"""Redis' clock: the one clock every host of a deployment agrees on.

Hosts' clocks drift and jump; a decision two hosts must agree on (is this tick due, is this replay due) reads
Redis' TIME, in the Lua script that acts on it where it can (CREATE, PROMOTE, TICK), else through here.
"""
from __future__ import annotations

from angora_rq.store.link import Link


def redis_now(link: Link) -> float:
    """Redis' TIME as unix seconds."""
    seconds, micros = link.call("TIME")
    return int(seconds) + int(micros) / 1e6

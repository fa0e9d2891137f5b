"""Which layout the data under a prefix is in (core/layout.py): roles start only on their own."""
from __future__ import annotations

from typing import Optional

from angora_rq.core.codec import to_str
from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.layout import LAYOUT, PREVIOUS
from angora_rq.core.schema import Metrics, Run
from angora_rq.store.connection import Redis


def found(r: Redis, keys: Keys) -> Optional[int]:
    """The layout the data under the prefix is in: its recorded number, else what the newest runs' records say
    (layout 1 recorded none; this one's records written before any role marked it are this one's), None when there
    is no data."""
    text = to_str(r.get(keys.schema()))
    if text:
        return int(text)
    with r.pipeline(transaction=False) as p:
        for run_id in r.zrange(keys.runs(), -5, -1):
            p.hexists(keys.run(to_str(run_id)), Run.created)
            p.hexists(keys.run(to_str(run_id)), "created")  # layout 1's name of the same field
        replies = p.execute()
    if any(replies[1::2]):
        return PREVIOUS
    return LAYOUT if any(replies[0::2]) else None


def check(r: Redis, keys: Keys) -> None:
    """Refuse to run on data of another layout (one line saying what to do); mark a new deployment with ours."""
    layout = found(r, keys)
    if layout is None or layout == LAYOUT:
        r.setnx(keys.schema(), LAYOUT)
        return
    if layout < LAYOUT:
        raise AngoraError(f"Redis holds Angora data of an older layout ({layout}; this release reads {LAYOUT}) under "
                          f"prefix {keys.prefix!r}: stop every Angora process, run `angora migrate`, then start "
                          "them again")
    if layout > LAYOUT:
        raise AngoraError(f"Redis holds Angora data of a newer layout ({layout}; this release reads {LAYOUT}) under "
                          f"prefix {keys.prefix!r}: run the release that wrote it (upgrade Angora on this host)")


def marked(r: Redis, keys: Keys) -> bool:
    """Whether the data under the prefix carries its layout mark (every role sets it as it starts)."""
    return bool(r.exists(keys.schema()))


def mark_again(r: Redis, keys: Keys) -> bool:
    """Mark the data with this release's layout unless it is marked; True when the mark was gone."""
    return bool(r.set(keys.schema(), LAYOUT, nx=True))


def count_loss(r: Redis, keys: Keys, now: float) -> None:
    """Count, with its time, that Redis came back without Angora's data (/metrics, the dashboard)."""
    with r.pipeline(transaction=False) as p:
        p.hincrby(keys.metrics(), Metrics.data_lost, 1)
        p.hset(keys.metrics(), Metrics.data_lost_at, repr(now))
        p.execute()

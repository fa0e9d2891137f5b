"""Tick arithmetic of schedules (pure: no I/O): when a schedule fires, and which ticks are due now.

Every datetime here is timezone-aware; results are in UTC. `cron` schedules are read in the schedule's own
timezone (so `0 9 * * *` in Europe/Paris is 09:00 Paris time, across DST changes); `every` schedules fire at
whole multiples of the interval since the Unix epoch, so every scheduler agrees on the ticks without talking.
"""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Optional
from zoneinfo import ZoneInfo

from croniter import croniter

from angora_rq.core.model import ScheduleDef

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
# A tick up to GRACE seconds old is on time (the loop was busy, a leader was being replaced); older ticks
# were missed while no scheduler ran, and the schedule's `catchup` decides what happens to them.
GRACE = 5.0
# At most this many on-time ticks are sent in one go (an `every` far shorter than GRACE).
MAX_BURST = 100


def next_fire(schedule: ScheduleDef, after: datetime | float) -> datetime:
    """The first tick strictly after `after` (an aware datetime or a unix time), in UTC."""
    after = _aware(after)
    if schedule.every is not None:
        step = _every_us(schedule.every)
        return EPOCH + US * (((after - EPOCH) // US) // step + 1) * step
    tz = _zone(schedule.timezone)
    start = after.astimezone(tz)
    while True:
        # croniter works in the start time's zone; guard against it ever not moving forward (DST edges).
        got = croniter(schedule.cron, start).get_next(datetime).astimezone(timezone.utc)
        if got > after:
            return got
        start = (start + timedelta(seconds=1)).astimezone(tz)


def prev_fire(schedule: ScheduleDef, at: datetime | float) -> datetime:
    """The latest tick at or before `at` (UTC)."""
    at = _aware(at)
    if schedule.every is not None:
        step = _every_us(schedule.every)
        return EPOCH + US * (((at - EPOCH) // US) // step) * step
    tz = _zone(schedule.timezone)
    before = croniter(schedule.cron, at.astimezone(tz)).get_prev(datetime).astimezone(timezone.utc)
    following = next_fire(schedule, before)
    return following if following <= at else before


def due_ticks(schedule: ScheduleDef, last_sent: Optional[datetime], now: datetime,
              grace: float = GRACE) -> list[datetime]:
    """Ticks to send now, oldest first, given the last tick sent (None: the schedule was never seen).

    On-time ticks (at most `grace` seconds old, newer than `last_sent`) are all sent. Older ones were missed:
    `catchup: skip` sends nothing for them, `catchup: once` sends one message for the whole missed period
    (as its latest tick), before the on-time ones. A schedule never seen starts from now: nothing is due.
    """
    now = _aware(now)
    if last_sent is None:
        return []
    last_sent = _aware(last_sent)
    if next_fire(schedule, last_sent) > now:
        return []
    horizon = now - timedelta(seconds=grace)
    out: list[datetime] = []
    tick = next_fire(schedule, max(last_sent, horizon))
    while tick <= now:
        out.append(tick)
        tick = next_fire(schedule, tick)
    out = out[-MAX_BURST:]
    first_on_time = out[0] if out else tick
    missed = prev_fire(schedule, first_on_time - US)
    if schedule.catchup == "once" and missed > last_sent:
        out.insert(0, missed)
    return out


def baseline(schedule: ScheduleDef, now: datetime) -> datetime:
    """Where a schedule seen for the first time starts from: its latest tick at or before now (not sent)."""
    return prev_fire(schedule, _aware(now))


def missed_count(schedule: ScheduleDef, last_sent: datetime, tick: datetime, limit: int = 10_000) -> int:
    """How many ticks fall in (last_sent, tick] (counted up to `limit`): what a catch-up message stands for."""
    n, t = 0, next_fire(schedule, last_sent)
    while t <= tick and n < limit:
        n += 1
        t = next_fire(schedule, t)
    return n


def to_ms(dt: datetime) -> int:
    """A tick as integer milliseconds since the epoch (how Redis stores it)."""
    return (_aware(dt) - EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """Inverse of to_ms."""
    return EPOCH + timedelta(milliseconds=int(ms))


def from_ts(ts: float) -> datetime:
    """A unix time as an aware UTC datetime, rounded down to the microsecond (never later than `ts`)."""
    return EPOCH + timedelta(microseconds=math.floor(ts * 1_000_000))


def _every_us(every: float) -> int:
    # Whole milliseconds (at least one), the resolution ticks are stored at in Redis.
    if not every > 0:
        raise ValueError(f"schedule interval {every!r}s is not positive")
    return max(1, round(every * 1000)) * 1000


def _aware(dt: datetime | float) -> datetime:
    if isinstance(dt, (int, float)):
        return from_ts(float(dt))  # a unix time (the web pages pass those)
    if dt.tzinfo is None:
        raise ValueError("tick arithmetic needs timezone-aware datetimes")
    return dt


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name or "UTC")

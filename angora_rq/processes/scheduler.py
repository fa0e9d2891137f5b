"""The scheduler: sends each schedule's message on its ticks, exactly once, however many schedulers run.

"Schedule the message, not the job": a tick is a root message on the bus, like `angora send`.

- Leadership: a lease `keys.scheduler_lease()` = "<holder> <token>", taken with SET NX PX (TTL 3 s) and renewed
  every second; the token comes from INCR `keys.scheduler_fence()` at acquisition, so each term has its own.
- Sending a tick is ONE Lua call that checks the lease still holds this holder's token and that the tick is newer
  than the schedule's last one (`keys.schedule(name)` field `last`), then runs bus's SEND (same fields, counters and
  backlog budget) and records the tick. A stale leader (paused, partitioned, lease expired) cannot send; a tick
  cannot be sent twice. Which ticks are due is decided by the pure `ticks` module.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Optional, Sequence

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, new_run_id
from angora_rq.core.model import Config, ScheduleDef
from angora_rq.store.bus import send_keys
from angora_rq.store.scripts import SEND
from angora_rq.core.settings import Settings
from angora_rq.core.ticks import GRACE, baseline, due_ticks, from_ms, from_ts, missed_count, next_fire, prev_fire, to_ms

__all__ = ["Scheduler", "next_fire", "prev_fire", "due_ticks", "schedule_status", "leader_status"]

log = logging.getLogger(__name__)
LEASE_TTL = 3.0
RENEW_EVERY = 1.0

# KEYS: lease, fence   ARGV: holder, ttl_ms   -> the new fencing token, or 0 when someone else holds the lease
ACQUIRE = """
local token = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
if redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'NX', 'PX', ARGV[2]) then
  redis.call('INCR', KEYS[2])
  return token
end
return 0
"""

# KEYS: lease   ARGV: "holder token", ttl_ms   -> 1 when still ours (extended), else 0
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# KEYS: lease   ARGV: "holder token"
RESIGN = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Send (or, mode 'mark', only record) one tick, fenced. Wraps bus's SEND unchanged as a function.
# KEYS: stream, run, runs, runs unsettled (as SEND), lease, schedule state
# ARGV: SEND's args (budget, now, run_id, n, fields..., topic, origin), then: "holder token", tick_ms, token,
#       run_prefix, overlap, mode, schedule name, covers
# -> {outcome, detail}: sent <entry id> | marked | stale <last> | fenced | overlap <run id> | backlog
TICK = "local function send_message()\n" + SEND + """
end
local base = 6 + tonumber(ARGV[4]) * 2
-- compare as numbers, store the argument text (a Lua number may print as 1.7e+12)
local holder, tick_s, token_s = ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
local tick, token = tonumber(tick_s), tonumber(token_s)
local run_prefix, overlap, mode = ARGV[base + 4], ARGV[base + 5], ARGV[base + 6]
if redis.call('GET', KEYS[5]) ~= holder then return {'fenced', ''} end
local st = redis.call('HMGET', KEYS[6], 'last', 'token', 'run')
if st[2] and tonumber(st[2]) > token then return {'fenced', ''} end
if st[1] and tonumber(st[1]) >= tick then return {'stale', st[1]} end
if mode == 'mark' then
  redis.call('HSET', KEYS[6], 'last', tick_s, 'token', token_s)
  return {'marked', ''}
end
if overlap == 'forbid' and st[3] and st[3] ~= '' then
  local active = tonumber(redis.call('HGET', run_prefix .. st[3], 'active') or '0') or 0
  if active > 0 then
    redis.call('HSET', KEYS[6], 'last', tick_s, 'token', token_s, 'last_skipped', tick_s)
    redis.call('HINCRBY', KEYS[6], 'skipped', 1)
    return {'overlap', st[3]}
  end
end
local id = send_message()
if type(id) == 'table' then return {'backlog', ''} end
redis.call('HSET', KEYS[2], 'schedule', ARGV[base + 7], 'tick', tick_s, 'covers', ARGV[base + 8])
redis.call('HSET', KEYS[6], 'last', tick_s, 'token', token_s, 'run', ARGV[3], 'entry', id, 'sent_at', ARGV[2])
redis.call('HINCRBY', KEYS[6], 'sent', 1)
return {'sent', id}
"""


@dataclass
class Lease:
    """This process's term as leader."""

    token: int
    value: str  # "<holder> <token>", what the lease key holds while the term lasts
    renewed: float  # time.monotonic() of the last successful acquire/renew


class Scheduler:
    """One scheduler process: `step()` keeps the lease and sends what is due; `run()` loops until stopped."""

    def __init__(self, r: redis.Redis, keys: Keys, settings: Settings, config: Callable[[], Config],
                 name: Optional[str] = None, ttl: float = LEASE_TTL, renew_every: float = RENEW_EVERY,
                 grace: float = GRACE) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.config = config
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        self.ttl = ttl
        self.renew_every = renew_every
        self.grace = grace
        self.lease: Optional[Lease] = None
        self.sent = 0
        self._acquire = r.register_script(ACQUIRE)
        self._renew = r.register_script(RENEW)
        self._resign = r.register_script(RESIGN)
        self._tick = r.register_script(TICK)
        self._last_lease_check = float("-inf")
        self._stop = threading.Event()

    @property
    def is_leader(self) -> bool:
        """True while this process holds an unexpired lease (as far as it can tell locally)."""
        return self.lease is not None and time.monotonic() - self.lease.renewed < self.ttl

    # -- loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Loop over step() until stop(); give the lease up on the way out."""
        try:
            while not self._stop.is_set():
                try:
                    self.step()
                except redis.exceptions.ConnectionError as e:
                    log.warning("scheduler %s: Redis connection lost (%s); retrying", self.name, e)
                    self.lease = None
                    self._stop.wait(1.0)
                    continue
                except Exception:
                    log.exception("scheduler %s: step failed; trying again", self.name)
                    self._stop.wait(1.0)
                    continue
                self._stop.wait(self._sleep_for(time.time()))
        finally:
            self.resign()
            try:
                self.r.hdel(self.keys.heartbeats(), f"scheduler:{self.name}")
            except redis.exceptions.RedisError:
                pass

    def stop(self, *_: Any) -> None:
        """Ask run() to return."""
        self._stop.set()

    def step(self, now: Optional[float] = None) -> int:
        """Keep (or try to take) the lease; as leader, send every due tick. Returns messages sent."""
        now = time.time() if now is None else now
        self._keep_lease(now)
        if not self.is_leader:
            return 0
        schedules = self.config().schedules
        if not schedules:
            return 0
        lasts = self._lasts(schedules)
        sent = 0
        for s in schedules:
            sent += self._fire(s, lasts.get(s.name), now)
            if not self.is_leader:
                break
        self.sent += sent
        return sent

    def resign(self) -> None:
        """Give the lease up now (clean stop), so another scheduler takes over at once."""
        if self.lease is not None:
            try:
                self._resign(keys=[self.keys.scheduler_lease()], args=[self.lease.value])
            except redis.exceptions.RedisError:
                pass
            self.lease = None

    # -- the lease --------------------------------------------------------------------------------
    def _keep_lease(self, now: float) -> None:
        mono = time.monotonic()
        if self.lease is not None and mono - self.lease.renewed < self.renew_every:
            return
        if self.lease is None and mono - self._last_lease_check < self.renew_every / 2:
            return
        self._last_lease_check = mono
        ttl_ms = int(self.ttl * 1000)
        self.r.hset(self.keys.heartbeats(), f"scheduler:{self.name}", repr(now))
        if self.lease is not None:
            if self._renew(keys=[self.keys.scheduler_lease()], args=[self.lease.value, ttl_ms]):
                self.lease.renewed = mono
                return
            log.warning("scheduler %s: lost the lease (token %d)", self.name, self.lease.token)
            self.lease = None
        token = int(self._acquire(keys=[self.keys.scheduler_lease(), self.keys.scheduler_fence()],
                                  args=[self.name, ttl_ms]))
        if token:
            self.lease = Lease(token, f"{self.name} {token}", mono)
            log.info("scheduler %s: leader now (fencing token %d)", self.name, token)

    def _fenced_out(self) -> None:
        log.warning("scheduler %s: fenced out (another scheduler leads); stepping down", self.name)
        self.lease = None

    # -- ticks ------------------------------------------------------------------------------------
    def _lasts(self, schedules: Sequence[ScheduleDef]) -> dict[str, Optional[datetime]]:
        with self.r.pipeline(transaction=False) as p:
            for s in schedules:
                p.hget(self.keys.schedule(s.name), "last")
            replies = p.execute()
        return {s.name: (from_ms(int(v)) if v else None) for s, v in zip(schedules, replies)}

    def _fire(self, s: ScheduleDef, last: Optional[datetime], now: float) -> int:
        """Send the ticks of one schedule that are due; a schedule seen for the first time starts from now."""
        at = from_ts(now)
        if last is None:
            self.send_tick(s, baseline(s, at), now, mode="mark")
            return 0
        sent = 0
        for tick in due_ticks(s, last, at, self.grace):
            covers = missed_count(s, last, tick) if (at - tick).total_seconds() > self.grace else 1
            outcome, detail = self.send_tick(s, tick, now, covers=covers)
            if outcome == "fenced":
                return sent
            if outcome == "sent":
                sent += 1
            elif outcome == "overlap":
                log.info("schedule %s: tick %s skipped, run %s still active", s.name, tick.isoformat(), detail)
            elif outcome == "backlog":
                log.warning("schedule %s: tick %s not sent, backlog budget used up", s.name, tick.isoformat())
                return sent  # try again next step (until the tick is older than the grace period)
        return sent

    def send_tick(self, s: ScheduleDef, tick: datetime, now: float, mode: str = "send",
                  covers: int = 1) -> tuple[str, str]:
        """One fenced Lua call: send the schedule's message for `tick` (or, mode 'mark', only record it)."""
        if not self.is_leader:
            return "fenced", ""
        assert self.lease is not None
        msg = Message.create(s.message, s.params, new_run_id(), origin=f"schedule:{s.name}", now=now)
        fields = msg.to_fields()
        flat = [x for kv in fields.items() for x in kv]
        k = self.keys
        args = [self.settings.backlog, repr(now), msg.run_id, len(fields), *flat, msg.topic, msg.origin,
                self.lease.value, to_ms(tick), self.lease.token, k.run(""), s.overlap, mode, s.name, covers]
        reply = self._tick(keys=[*send_keys(k, msg.run_id), k.scheduler_lease(), k.schedule(s.name)], args=args)
        outcome, detail = (_s(x) for x in reply)
        if outcome == "fenced":
            self._fenced_out()
        elif outcome == "sent":
            log.info("schedule %s: sent %s for tick %s (run %s)", s.name, s.message, tick.isoformat(), msg.run_id)
        return outcome, detail

    def _sleep_for(self, now: float) -> float:
        """Until the next tick or lease renewal, whichever is first (at most renew_every)."""
        wait = self.renew_every if self.is_leader else self.renew_every / 2
        if self.is_leader:
            try:
                soonest = min((next_fire(s, from_ts(now)).timestamp() for s in self.config().schedules),
                              default=now + wait)
            except ValueError:
                soonest = now + wait
            wait = min(wait, soonest - now)
        return max(0.005, wait)


# -- status for the CLI, the API and the Schedules page ---------------------------------------------

def leader_status(r: redis.Redis, keys: Keys) -> dict[str, Any]:
    """Who leads the schedulers: {"holder", "token", "ttl"} (holder None when no scheduler runs)."""
    with r.pipeline(transaction=False) as p:
        p.get(keys.scheduler_lease())
        p.pttl(keys.scheduler_lease())
        value, pttl = p.execute()
    if not value:
        return {"holder": None, "token": None, "ttl": None}
    holder, _, token = _s(value).rpartition(" ")
    return {"holder": holder, "token": int(token) if token.isdigit() else None,
            "ttl": pttl / 1000 if pttl and pttl > 0 else None}


def schedule_status(r: redis.Redis, keys: Keys, snapshot: Any, now: Optional[float] = None) -> list[dict[str, Any]]:
    """Every schedule of the definitions with its next fire time and what was last sent (times: unix seconds).

    `snapshot` is a Snapshot or a Config. One round trip.
    """
    config: Config = getattr(snapshot, "config", snapshot)
    now = time.time() if now is None else now
    schedules = list(config.schedules)
    with r.pipeline(transaction=False) as p:
        for s in schedules:
            p.hgetall(keys.schedule(s.name))
        states = p.execute()
    runs: list[Any] = []
    with r.pipeline(transaction=False) as p:
        for raw in states:
            p.hget(keys.run(_s(raw.get(b"run", b"")) or "-"), "active")
        runs = p.execute()
    return [_status_row(s, {_s(k): _s(v) for k, v in raw.items()}, active, now)
            for s, raw, active in zip(schedules, states, runs)]


def _status_row(s: ScheduleDef, st: dict[str, str], active: Any, now: float) -> dict[str, Any]:
    try:
        nxt: Optional[float] = next_fire(s, from_ts(now)).timestamp()
    except ValueError:
        nxt = None
    last = int(st["last"]) / 1000 if st.get("last") else None
    return {
        **s.to_json(),
        "next_fire": nxt,
        "last_tick": last,
        "last_sent_at": float(st["sent_at"]) if st.get("sent_at") else None,
        "last_run": st.get("run") or None,
        "last_run_active": bool(active) and int(_s(active) or 0) > 0,
        "sent": int(st.get("sent") or 0),
        "skipped": int(st.get("skipped") or 0),
    }


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else ("" if v is None else str(v))

"""The matcher: reads the message stream in a consumer group and dispatches one execution per matched job.

Each batch is read, then dispatched and acknowledged in ONE MULTI/EXEC guarded by WATCH on a dedupe key per
(entry, job) (per (run, job) for parent_success joins): a matcher killed at any instant loses nothing (its
entries stay pending and are claimed by another matcher) and dispatches nothing twice.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import redis

from . import bus
from .keys import MATCHER_GROUP, Keys
from .messages import Message
from .model import JobDef
from .settings import Settings
from .snapshot import Snapshot
from .state import State

log = logging.getLogger(__name__)
DEDUPE_TTL = 86400
MAX_WATCH_RETRIES = 20
HEARTBEAT_EVERY = 0.5


@dataclass
class Dispatch:
    """One (entry, job) the matcher may start, and the key that makes it happen once."""

    entry: str
    msg: Message
    job: JobDef
    guard: str


@dataclass
class Batch:
    """Decoded entries of one read, with what each may dispatch."""

    entries: list[tuple[str, Message]] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)


class Matcher:
    """One matcher process: `step()` handles one batch, `run()` loops until stopped."""

    def __init__(
        self,
        r: redis.Redis,
        keys: Keys,
        settings: Settings,
        snapshot: Callable[[], Snapshot],
        name: Optional[str] = None,
        batch_size: int = 100,
        dedupe: bool = True,
    ) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.snapshot = snapshot
        self.name = name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        self.batch_size = batch_size
        # dedupe=False is the naive design (dispatch, then acknowledge separately): only for the crash test
        # that proves duplicates are visible without the guard.
        self.dedupe = dedupe
        self.state = State(keys, settings)
        self.stopping = False
        self._last_claim = 0.0
        self._last_trim = 0.0
        self._last_beat = 0.0
        self._own_pending_done = False

    # -- loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Loop over step() until stop() is called."""
        bus.ensure_group(self.r, self.keys)
        while not self.stopping:
            try:
                self.step()
            except redis.exceptions.ConnectionError as e:
                log.warning("matcher %s: Redis connection lost (%s); retrying", self.name, e)
                time.sleep(1.0)
            except Exception:
                log.exception("matcher %s: batch failed; it stays pending and will be retried", self.name)
                time.sleep(1.0)

    def stop(self, *_: Any) -> None:
        """Ask run() to return after the current batch."""
        self.stopping = True

    def step(self, block_ms: int = 1000, now: Optional[float] = None) -> int:
        """Read and dispatch one batch (own pending first, then claimed, then new); return entries handled."""
        now = time.time() if now is None else now
        self._housekeeping(now)
        entries = self._read(block_ms)
        if entries:
            self.process(entries, now)
        return len(entries)

    def _housekeeping(self, now: float) -> None:
        if now - self._last_beat >= HEARTBEAT_EVERY:
            # At most twice a second: under a trickle of messages each batch is small, and a beat per batch was
            # a round trip per message. Idle, step() blocks up to a second, so beats stay under ~1.5 s apart.
            self._last_beat = now
            self.r.hset(self.keys.heartbeats(), f"matcher:{self.name}", repr(now))
        self.snapshot()  # a reloading source (reload.Reloader) checks for new definitions here, even when idle
        if now - self._last_trim > 1.0:
            self._last_trim = now
            bus.trim(self.r, self.keys)

    def _read(self, block_ms: int) -> list[tuple[str, dict]]:
        stream = self.keys.stream()
        if not self._own_pending_done:
            # After a restart under the same name: what this consumer read but never acknowledged.
            got = self.r.xreadgroup(MATCHER_GROUP, self.name, {stream: "0"}, count=self.batch_size)
            items = got[0][1] if got else []
            if items:
                return [(_s(i), f) for i, f in items if f]
            self._own_pending_done = True
        claimed = self._claim_stale()
        if claimed:
            return claimed
        got = self.r.xreadgroup(MATCHER_GROUP, self.name, {stream: ">"}, count=self.batch_size, block=block_ms)
        return [(_s(i), f) for i, f in (got[0][1] if got else [])]

    def _claim_stale(self) -> list[tuple[str, dict]]:
        """Entries pending on another (dead or stuck) matcher for longer than claim_idle."""
        now = time.monotonic()
        if now - self._last_claim < min(1.0, self.settings.claim_idle / 2):
            return []
        self._last_claim = now
        reply = self.r.xautoclaim(self.keys.stream(), MATCHER_GROUP, self.name,
                                  min_idle_time=int(self.settings.claim_idle * 1000), count=self.batch_size)
        # Redis 6.2 replies with 2 elements, 7.x with 3: do not tuple-unpack (facts.md).
        items = reply[1] if len(reply) > 1 else []
        out = [(_s(i), f) for i, f in items if f]
        if out:
            log.info("matcher %s: claimed %d entries from a stalled matcher", self.name, len(out))
        return out

    # -- dispatch ---------------------------------------------------------------------------------
    def plan_batch(self, entries: list[tuple[str, dict]], snap: Snapshot) -> Batch:
        """Decode entries and list what each may dispatch (pure but for the index lookup)."""
        batch = Batch()
        for entry, fields in entries:
            msg = Message.from_fields(fields)
            batch.entries.append((entry, msg))
            for job in snap.lookup(msg.topic):
                guard = self.keys.join(msg.run_id, job.name) if job.parent_success else self.keys.dedupe(entry, job.name)
                batch.dispatches.append(Dispatch(entry, msg, job, guard))
        return batch

    def process(self, entries: list[tuple[str, dict]], now: float) -> int:
        """Dispatch and acknowledge a batch exactly once; return the number of executions created."""
        snap = self.snapshot()
        batch = self.plan_batch(entries, snap)
        if not self.dedupe:
            return self._process_unsafe(batch, snap, now)
        for _ in range(MAX_WATCH_RETRIES):
            with self.r.pipeline() as pipe:
                try:
                    return self._transact(pipe, batch, snap, now)
                except redis.exceptions.WatchError:
                    continue  # another matcher touched a guard: read again and decide again
        raise RuntimeError("matcher: batch kept conflicting with other matchers")

    def _transact(self, pipe: Any, batch: Batch, snap: Snapshot, now: float) -> int:
        guards = sorted({d.guard for d in batch.dispatches})
        if guards:
            # The paused set too: a resume between this read and EXEC must not leave an execution held for ever.
            pipe.watch(*guards, self.keys.paused_jobs())
        taken, runs, paused = self._read_state(guards, batch)
        pipe.multi()
        created = self._write(pipe, batch, snap, runs, taken, now, paused)
        pipe.xack(self.keys.stream(), MATCHER_GROUP, *[e for e, _ in batch.entries])
        pipe.execute()
        return created

    def _read_state(self, guards: list[str], batch: Batch) -> tuple[set[str], dict[str, dict[str, str]], set[str]]:
        """Which guards are taken, the hashes of the batch's runs and the paused jobs: one round trip.

        Read on a plain pipeline after WATCH: a guard written meanwhile still aborts the EXEC.
        """
        run_ids = sorted({m.run_id for _, m in batch.entries})
        with self.r.pipeline(transaction=False) as rp:
            if guards:
                rp.mget(guards)
                rp.smembers(self.keys.paused_jobs())
            for run_id in run_ids:
                rp.hgetall(self.keys.run(run_id))
            replies = rp.execute()
        values = replies.pop(0) if guards else []
        paused = {_s(v) for v in replies.pop(0)} if guards else set()
        taken = {g for g, v in zip(guards, values) if v is not None}
        runs = {rid: {_s(k): _s(v) for k, v in raw.items()} for rid, raw in zip(run_ids, replies)}
        return taken, runs, paused

    def _write(self, pipe: Any, batch: Batch, snap: Snapshot, runs: dict, taken: set, now: float,
               paused: set[str] | frozenset[str] = frozenset()) -> int:
        created = 0
        absorbed: set[str] = set()
        for entry, msg in batch.entries:
            if msg.is_root:
                self._set_plan(pipe, msg, snap, runs.setdefault(msg.run_id, {}))
        for d in batch.dispatches:
            run = runs.get(d.msg.run_id, {})
            if d.guard in taken or run.get("canceled") == "1" or not self._join_ready(d, snap, run):
                continue
            taken.add(d.guard)
            held = d.job.name in paused  # paused job: held, in order, until resumed (pausing.py)
            # The entry's first execution takes over its message's count in the run (see below).
            first = d.entry not in absorbed
            absorbed.add(d.entry)
            xid = self.state.create(pipe, d.job, d.msg, now, entry=d.entry, config_version=snap.version,
                                    status="held" if held else "queued", guard=d.guard, guard_ttl=DEDUPE_TTL,
                                    active_delta=0 if first else 1)
            if held:
                pipe.rpush(self.keys.paused_held(d.job.name), xid)
            created += 1
        for entry, msg in batch.entries:
            if entry not in absorbed:
                # The message itself stops counting in its run (no execution took its place).
                pipe.hincrby(self.keys.run(msg.run_id), "active", -1)
        return created

    def _set_plan(self, pipe: Any, msg: Message, snap: Snapshot, run: dict[str, str]) -> None:
        """Record the run's plan from its root message (merged with any plan it already has)."""
        plan = snap.plan(msg.topic)
        if run.get("plan"):
            old = json.loads(run["plan"])
            jobs = old["jobs"] + [j for j in plan["jobs"] if j not in old["jobs"]]
            plan = {"jobs": jobs, "parents": {**plan["parents"], **old["parents"]},
                    "depth": {**plan.get("depth", {}), **old.get("depth", {})}}
        run["plan"] = json.dumps(plan)
        pipe.hset(self.keys.run(msg.run_id), mapping={
            "plan": run["plan"], "config_version": snap.version, "params": json.dumps(msg.params)})

    def _join_ready(self, d: Dispatch, snap: Snapshot, run: dict[str, str]) -> bool:
        """A parent_success job starts once every parent (within the run's plan) has succeeded in the run."""
        if not d.job.parent_success:
            return True
        plan_jobs = json.loads(run["plan"])["jobs"] if run.get("plan") else None
        parents = snap.join_parents(d.job.name, plan_jobs)
        return all(run.get(f"s:{p}") in ("succeeded", "skipped") for p in parents)

    def _process_unsafe(self, batch: Batch, snap: Snapshot, now: float) -> int:
        """The naive design, kept only as a control for the crash test: dispatch, then acknowledge later."""
        created = 0
        for entry, msg in batch.entries:
            with self.r.pipeline() as pipe:
                for d in batch.dispatches:
                    if d.entry == entry:
                        self.state.create(pipe, d.job, d.msg, now, entry=entry, config_version=snap.version)
                        created += 1
                pipe.hincrby(self.keys.run(msg.run_id), "active", -1)
                pipe.execute()
        self.r.xack(self.keys.stream(), MATCHER_GROUP, *[e for e, _ in batch.entries])
        return created


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, (bytes, bytearray)) else str(v)

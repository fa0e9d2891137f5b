"""The matcher: reads the message stream in a consumer group and dispatches one execution per matched job.

Each batch is read, then dispatched and acknowledged by ONE Lua call (dispatch.py) that handles only the entries
still pending for this matcher (a parent_success join once per run): a matcher killed at any instant loses nothing
(its entries stay pending and are claimed by another matcher) and nothing is dispatched twice (an entry claimed
from a stalled matcher is no longer that one's; an acknowledged entry is nobody's).
"""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from angora_rq.store.connection import UNREACHABLE, Redis, ResponseError, lasting
from angora_rq.core.codec import to_str
from angora_rq.store import bus
from angora_rq.store.dispatch import RECORD_EVERY, Dispatcher, Outgoing, keep_follow, record_follow
from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.events import wanted
from angora_rq.store.events import Events, write_wanted
from angora_rq.store.link import Link
from angora_rq.store.deadletters import dead_letter
from angora_rq.store.replication import NotReplicated, confirm, wait_command
from angora_rq.store.scripts import READ_RUNS, SET_PLAN
from angora_rq.core.messages import Message
from angora_rq.core.model import JobDef
from angora_rq.core.execution import UNVERSIONED
from angora_rq.core.plans import PLAN_JSON, missing_parents, plan_ref, run_plan_json
from angora_rq.core.settings import Settings
from angora_rq.store.state import host_of
from angora_rq.core.snapshot import Snapshot
from angora_rq.store.versions import publish_running_version
from angora_rq.processes.datawatch import DataWatch
from angora_rq.processes.outage import Outage

log = logging.getLogger(__name__)
HEARTBEAT_EVERY = 0.5
EVENTS_EVERY = 10.0
MAX_PLAN_RETRIES = 10
CONSUMERS_EVERY = 10.0
# A matcher reads at least once a second, so a consumer idle this long with nothing pending is a dead matcher's.
DEAD_CONSUMER_IDLE = 60.0


@dataclass
class Dispatch:
    """One (entry, job) the matcher may start."""

    entry: str
    msg: Message
    job: JobDef


@dataclass
class Batch:
    """Decoded entries of one read, with what each may dispatch."""

    entries: list[tuple[str, Message]] = field(default_factory=list)
    dispatches: list[Dispatch] = field(default_factory=list)


# Seconds a matcher waits after a batch smaller than a full one before it reads again, so that under load the next
# read takes more entries: a DISPATCH's fixed cost (one round trip, the script's entry, the jobs' arguments) is
# shared by more messages. Measured through the Python API (bench throughput, 3,000 jobs, 3 runs each, twice):
# Redis commands per job 25.1-25.4 -> 22.6-22.7 and Redis CPU per job 203-220 -> 169-205 us for 1 ms; 2 ms saved
# no more. At a trickle it costs nothing (a lone message is read at once; only one arriving within the linger after
# it waits); /send and a worker's follow-up messages do not go through the matcher.
LINGER = 0.001
# An entry that fails alone is to blame (a dead letter) if this matcher dispatched something within this many
# seconds; otherwise only once it failed twice while DISPATCH itself runs (Matcher.to_blame).
BLAME_WITHIN = 60.0


class Matcher:
    """One matcher process: `step()` handles one batch, `run()` loops until stopped."""

    def __init__(
        self,
        r: Redis,
        keys: Keys,
        settings: Settings,
        snapshot: Callable[[], Snapshot],
        name: Optional[str] = None,
        batch_size: int = 100,
        linger: float = LINGER,
    ) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.snapshot = snapshot
        self.name = name or f"{host_of(settings)}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        self.batch_size = batch_size
        self.linger = linger
        self.link = Link(r)  # the hot path's own connection (link.py)
        self.events = Events(r, keys)
        self.dispatcher = Dispatcher(self.link, keys, settings, self.name, self.events)
        self.stopping = False
        self._last_claim = 0.0
        self._last_trim = 0.0
        self._last_beat = 0.0
        self._last_consumers = 0.0
        self._published = ""
        self._through_at = float("-inf")  # when a dispatch of this matcher last went through (monotonic)
        self._own_pending_done = False
        self._events_version: Optional[str] = None
        self._events_at = float("-inf")
        self._follow_version: Optional[str] = None
        self._follow_at = float("-inf")
        self._follow: dict[str, str] = {}  # the follow records of _follow_version

    # -- loop -------------------------------------------------------------------------------------
    def run(self) -> None:
        """Loop over step() until stop() is called; wait out Redis outages (what was read stays pending)."""
        group, outage = False, Outage(f"matcher {self.name}")
        watch = DataWatch(self.r, self.keys, f"matcher {self.name}")
        while not self.stopping:
            try:
                if not group:
                    bus.ensure_group(self.r, self.keys)  # here, not before the loop: Redis may be down at start
                    group = True
                if 0 < self.step() < self.batch_size and self.linger:
                    time.sleep(self.linger)
                if outage.reached() or watch.pending:
                    watch.check()
            except UNREACHABLE as e:
                outage.failed(e)
                # A batch whose reply was lost may not have been dispatched: read this consumer's pending again.
                self._own_pending_done = False
                time.sleep(outage.wait())
            except ResponseError as e:
                if "NOGROUP" in str(e):  # a Redis that came back empty: the group went with the stream
                    group = False
                    continue
                log.exception("matcher %s: batch failed; it stays pending and will be retried", self.name)
                time.sleep(1.0)
            except Exception:
                log.exception("matcher %s: batch failed; it stays pending and will be retried", self.name)
                time.sleep(1.0)

    def stop(self, *_: Any) -> None:
        """Ask run() to return after the current batch."""
        self.stopping = True

    def step(self, block_ms: int = 1000, now: Optional[float] = None) -> int:
        """Read and dispatch one batch (own pending first, then claimed, then new), waiting up to block_ms for new
        entries (0: not at all); return entries handled."""
        self._housekeeping(time.time() if now is None else now)
        entries = self._read(block_ms)
        if entries:
            # The time after the (blocking) read: executions are never created before their message was sent.
            self.handle(entries, time.time() if now is None else now)
        return len(entries)

    def handle(self, entries: list[tuple[str, dict]], now: float) -> int:
        """process() a batch; if it fails for a reason that trying again would not change (`lasting`), each entry
        alone, so that one bad message holds up none of the others. An entry that fails alone is put aside as a
        dead letter (store/deadletters.py) when others go through (in this batch, or lately: BLAME_WITHIN), or
        else once it has failed twice while DISPATCH itself still runs (`to_blame`). Otherwise (Redis cannot
        serve, or nothing runs) raise: the entries stay pending and are tried again after claim_idle. Returns the
        executions created."""
        try:
            created = self.process(entries, now)
        except Exception as e:
            if not lasting(e):
                raise
            failed: Exception = e
        else:
            self._through_at = time.monotonic()
            return created
        if len(entries) == 1:
            created, bad = 0, [(entries[0], failed)]
        else:
            log.warning("matcher %s: a batch of %d entries failed (%s); dispatching them one by one", self.name,
                        len(entries), failed)
            created, bad = self._one_by_one(entries, now)
        if len(bad) == len(entries) and not self._going_through() and not self.to_blame(bad, now):
            raise failed  # nothing went through: more likely this matcher or its Redis than the messages
        for (entry_id, fields), error in bad:
            if dead_letter(self.link, self.keys, entry_id, fields, f"{type(error).__name__}: {error}", self.name,
                           now, self.events.any()):
                log.error("matcher %s: message %s put aside as a dead letter (angora dead-letters): it failed "
                          "alone: %s", self.name, entry_id, error)
        return created

    def to_blame(self, bad: list[tuple[tuple[str, dict], Exception]], now: float) -> bool:
        """With nothing going through to compare with (a /send dispatches most messages itself): whether entries
        that failed alone are to blame. Each was read at least twice (it failed again after claim_idle), and a
        DISPATCH of no message runs: the script and Redis work, these entries do not."""
        for (entry_id, _), _ in bad:
            got = self.r.xpending_range(self.keys.stream(), MATCHER_GROUP, min=entry_id, max=entry_id, count=1)
            if not got or int(got[0]["times_delivered"]) < 2:
                return False
        try:
            self.dispatcher.dispatch(Outgoing([], []), self.snapshot().version, now)
        except Exception as e:  # noqa: BLE001 - whatever it is, the entries are not shown to be at fault
            log.warning("matcher %s: DISPATCH of no message failed too (%s): the entries wait", self.name, e)
            return False
        return True

    def _one_by_one(self, entries: list[tuple[str, dict]],
                    now: float) -> tuple[int, list[tuple[tuple[str, dict], Exception]]]:
        """process() each entry alone: the executions created, and the entries that failed for a lasting reason
        with their errors (any other error is raised: what is left stays pending)."""
        created, bad = 0, []
        for entry in entries:
            try:
                created += self.process([entry], now)
            except Exception as e:
                if not lasting(e):
                    raise
                bad.append((entry, e))
            else:
                self._through_at = time.monotonic()
        return created, bad

    def _going_through(self) -> bool:
        """Whether this matcher dispatched something lately (so an entry that fails alone is the entry's fault)."""
        return time.monotonic() - self._through_at < BLAME_WITHIN

    def _housekeeping(self, now: float) -> None:
        # A reloading source (reload.Reloader) checks for new definitions here, even when idle.
        version = self.snapshot().version
        if now - self._last_beat >= HEARTBEAT_EVERY or version != self._published:
            # At most twice a second: under a trickle of messages each batch is small, and a beat per batch was
            # a round trip per message. Idle, step() blocks up to a second, so beats stay under ~1.5 s apart.
            # The version goes with it (at once when it changes): the web role follows what the matchers run.
            self._last_beat, self._published = now, version
            with self.r.pipeline(transaction=False) as p:
                p.hset(self.keys.heartbeats(), f"matcher:{self.name}", repr(now))
                publish_running_version(p, self.keys, version)
                p.execute()
        snap = self.snapshot()
        if snap.version != self._events_version or now - self._events_at > EVENTS_EVERY:
            # Who listens to which event, for every process that publishes them (written again now and then: a
            # Redis that restarted empty forgets it).
            write_wanted(self.r, self.keys, wanted(snap.index, snap.config.webhooks))
            self._events_version, self._events_at = snap.version, now
        if snap.version != self._follow_version:
            # Which topics workers dispatch themselves, for this version: computed and written once per version
            # (a second with 100,000 definitions), then kept in use, and written again if Redis lost them.
            self._follow = snap.follow_records()
            record_follow(self.r, self.keys, snap.version, self._follow, now)
            self._follow_version, self._follow_at = snap.version, now
        elif self._follow and snap.version and now - self._follow_at > RECORD_EVERY:
            self._follow_at = now
            if not keep_follow(self.r, self.keys, snap.version, next(iter(self._follow)), now):
                record_follow(self.r, self.keys, snap.version, self._follow, now)
        if now - self._last_trim > 1.0:
            self._last_trim = now
            bus.trim(self.r, self.keys)
        if now - self._last_consumers > CONSUMERS_EVERY:
            self._last_consumers = now
            self.drop_dead_consumers()

    def drop_dead_consumers(self, min_idle: float = DEAD_CONSUMER_IDLE) -> list[str]:
        """Remove from the group the consumers (other than this one) with nothing pending, idle over `min_idle` s.

        Their pending entries were claimed already (`_claim_stale`); a matcher that was only slow is added back by
        its next read. Returns the names removed.
        """
        stream, gone = self.keys.stream(), []
        for c in self.r.xinfo_consumers(stream, MATCHER_GROUP):
            name = to_str(c["name"])
            if name != self.name and int(c["pending"]) == 0 and int(c["idle"]) > min_idle * 1000:
                self.r.xgroup_delconsumer(stream, MATCHER_GROUP, name)
                gone.append(name)
        if gone:
            log.info("matcher %s: removed %d dead consumer(s) from the group: %s", self.name, len(gone),
                     ", ".join(gone))
        return gone

    def _read(self, block_ms: int) -> list[tuple[str, dict]]:
        stream = self.keys.stream()
        if not self._own_pending_done:
            # After a restart under the same name: what this consumer read but never acknowledged.
            got = self.r.xreadgroup(MATCHER_GROUP, self.name, {stream: "0"}, count=self.batch_size)
            items = got[0][1] if got else []
            if items:
                return [(to_str(i), f) for i, f in items if f]
            self._own_pending_done = True
        claimed = self._claim_stale()
        if claimed:
            return claimed
        # block_ms 0: no wait (Redis' own BLOCK 0 waits for ever). A short wait is as long as Redis' timer tick:
        # the bundled Redis 6.2 times a blocked read out only at its next 100 ms cron (hz 10).
        block = ("BLOCK", block_ms) if block_ms > 0 else ()
        got = self.link.call("XREADGROUP", "GROUP", MATCHER_GROUP, self.name, "COUNT", self.batch_size, *block,
                             "STREAMS", stream, ">")
        # RESP3 (redis-py 8's default) answers with a map {stream: entries}, RESP2 with [[stream, entries]].
        items = next(iter(got.values())) if isinstance(got, dict) else got[0][1] if got else []
        return [(to_str(i), dict(zip(f[::2], f[1::2]))) for i, f in items if f]

    def _claim_stale(self) -> list[tuple[str, dict]]:
        """Entries pending on another (dead or stuck) matcher for longer than claim_idle."""
        now = time.monotonic()
        if now - self._last_claim < min(1.0, self.settings.claim_idle / 2):
            return []
        self._last_claim = now
        reply = self.r.xautoclaim(self.keys.stream(), MATCHER_GROUP, self.name,
                                  min_idle_time=int(self.settings.claim_idle * 1000), count=self.batch_size)
        # Redis 6.2 replies with 2 elements, 7.x (and fakeredis) with 3: do not tuple-unpack.
        items = reply[1] if len(reply) > 1 else []
        out = [(to_str(i), f) for i, f in items if f]
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
                batch.dispatches.append(Dispatch(entry, msg, job))
        return batch

    def process(self, entries: list[tuple[str, dict]], now: float) -> int:
        """Dispatch and acknowledge a batch exactly once; return the number of executions created."""
        snap = self.snapshot()
        batch = self.plan_batch(entries, snap)
        # Only joins need the runs read first. Otherwise a root message's plan is written unless its run already
        # has one (rare: a second root message in a run), which the script hands back to be merged afterwards.
        joins = any(d.job.parent_success for d in batch.dispatches)
        runs = self._read_runs(batch) if joins else {}
        out = Outgoing([], [])
        index: dict[str, int] = {}
        for entry, msg in batch.entries:
            plan = ""
            if msg.is_root:
                run = runs.setdefault(msg.run_id, {})  # a later root message of the run in this batch merges into it
                run[PLAN_JSON] = run_plan_json(snap, msg.topic, run.get(PLAN_JSON, ""))
                plan = ("=" if joins else "?") + run[PLAN_JSON]
            index[entry] = len(out.messages)
            out.messages.append((entry, msg, plan))
        for d in batch.dispatches:
            # A join whose parents have not all succeeded is not tried; whether the entry is still this matcher's,
            # the join's once per run, pauses and cancels are checked by the script itself, atomically with the writes.
            if not d.job.parent_success or not missing_parents(snap, d.job.name, runs.get(d.msg.run_id, {})):
                out.dispatches.append((index[d.entry], d.job))
        created, conflicts = self.dispatcher.dispatch(out, snap.version, now)
        for m, old in conflicts:
            self._merge_plan(out.messages[m][1], snap, old)
        self._replicated()
        return created

    def _replicated(self) -> None:
        """With ANGORA_DURABILITY=replicated, a batch counts as done once a replica has it (WAIT on the Link that
        dispatched it). Unconfirmed, its entries are read again from this consumer's pending list: a failover that
        lost the batch left them pending (or undelivered) on the new primary; the dedupe keys make it a no-op
        otherwise."""
        wait = wait_command(self.settings)
        if wait is None:
            return
        try:
            confirm(self.link.call(*wait), "the matcher's batch")
        except NotReplicated as e:
            log.warning("matcher %s: %s; its entries will be read again", self.name, e.message)
            self._own_pending_done = False

    def _merge_plan(self, msg: Message, snap: Snapshot, old: str) -> None:
        """Record the merge of a run's plan with a root message's own (compare-and-set, retried on a change)."""
        k, version = self.keys, snap.version or UNVERSIONED
        for _ in range(MAX_PLAN_RETRIES):
            merged = run_plan_json(snap, msg.topic, old)
            old = SET_PLAN.bind(run=k.run(msg.run_id), defs=k.definitions(version), defs_index=k.definitions_index(),
                                read=plan_ref(old), merged_ref=plan_ref(merged), merged=merged,
                                config_version=version, params=json.dumps(msg.params) if msg.params else "",
                                defs_prefix=k.definitions(""), now=repr(time.time())).run(self.link)
            if old is None:
                return
            old = to_str(old)
        log.warning("matcher %s: the plan of run %s kept changing; left as it is", self.name, msg.run_id)

    def _read_runs(self, batch: Batch) -> dict[str, dict[str, str]]:
        """The runs a batch must read first: root messages' (for their plans) and joins' (every status)."""
        modes = {m.run_id: "plan" for _, m in batch.entries if m.is_root}
        modes.update((d.msg.run_id, "all") for d in batch.dispatches if d.job.parent_success)
        if not modes:
            return {}
        runs: list[Any] = []
        for run_id, mode in modes.items():
            runs += (self.keys.run(run_id), mode)
        replies = READ_RUNS.bind(defs_prefix=self.keys.definitions(""), runs=runs).run(self.link)
        out: dict[str, dict[str, str]] = {}
        for run_id, (plan, flat) in zip(modes, replies):
            run = out[run_id] = {to_str(k): to_str(v) for k, v in zip(flat[::2], flat[1::2])}
            if plan:
                run[PLAN_JSON] = to_str(plan)
        return out

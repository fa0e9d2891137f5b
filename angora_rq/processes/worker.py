"""The Angora worker: runs several commands at once per process, with pipelined bookkeeping.

Executions stay RQ jobs (`rq:queue:<q>`, `rq:job:<id>`, registries, `rq:workers`), so rq-dashboard shows them and a
stock `rq worker` can run them too (slowly) through `run_execution`. This worker claims them in batches with one Lua
call, waits on the commands' pidfds and a wake-up pipe in one selector, and records each batch of finished commands
in one MULTI/EXEC.

Redis may go away at any moment (restart, failover, a reset connection). A command that has ended is kept
(`outbox.Unrecorded`) until Redis has its record, and written to disk if the worker must exit first. A record whose
reply was lost, or that this worker may no longer own (its heartbeat lapsed and a janitor replayed its executions),
is written only after checking the execution is still `running` under this worker (`fence.write_if_running`), so
a retry never counts an end twice. A CLAIM whose reply was lost is found again in the worker's inflight list.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import selectors
import signal
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

from angora_rq.store.connection import UNREACHABLE, Redis, RedisError
from angora_rq.core.codec import to_str
from angora_rq.core import keys as K
from angora_rq.commands import runner, spawn
from angora_rq.commands.guardian import Guardian
from angora_rq.commands.reaper import Orphans
from angora_rq.processes.janitor import Janitor, lost_claims
from angora_rq.processes.outage import Outage
from angora_rq.core.schema import RqWorker
from angora_rq.processes.outbox import Outbox, Unrecorded
from angora_rq.processes.selffence import SelfFence
from angora_rq.store.replication import NotReplicated, confirm, wait_command
from angora_rq.core.keys import Keys
from angora_rq.core.command import CleanEnv, command_spec
from angora_rq.core.execution import FENCED, Claimed, worker_host
from angora_rq.store.events import OUTBOX_CAP, Events
from angora_rq.store.dispatch import Dispatcher, Outgoing
from angora_rq.store.fence import still_ours
from angora_rq.store.link import Link
from angora_rq.store import rqworker
from angora_rq.store.scripts import CLAIM, Bound, run_both
from angora_rq.core.settings import Settings
from angora_rq.store.state import Finished, State, host_of

log = logging.getLogger(__name__)
LIVE_TAIL_EVERY = 1.0
SPILL_SCAN_EVERY = 2.0
# Of the heartbeat's TTL, what is not counted on when deciding that no janitor can have taken this worker's
# executions (the beat's transit, a clock that drifts): past it, records are written only after a check.
ALIVE_MARGIN = 0.4  # of the TTL: 2 s of the default 5 s
# The heartbeat thread stands in for a loop that is late with its beat (a slow pass, a starved CPU), but not for
# one stuck this many TTLs (30 s of the default 5 s): then the lease lapses and a janitor replays what it holds.
LOOP_STUCK = 6


@dataclass
class Active:
    """A command this worker is running."""

    ex: Claimed
    cmd: Any  # runner.RunningCommand
    hand_back: bool = False
    checked: bool = False  # record its end only after checking it is still ours (see Unrecorded.checked)
    live: bool = False  # its tail key has been written while it ran
    fenced: bool = False  # ended by the self-fence (selffence.py): its lease could not be renewed

    @property
    def pgid(self) -> int:
        """The command's process group (0 when it has none)."""
        return int(getattr(self.cmd, "pgid", 0) or 0)


@dataclass
class WorkerStats:
    """Counters for logs and benchmarks."""

    started: int = 0
    finished: int = 0
    claims: int = 0
    finalizes: int = 0
    extra: dict = field(default_factory=dict)


class AngoraWorker:
    """One worker process: `step()` does one iteration, `run()` loops until stopped (or idle, with burst)."""

    def __init__(
        self,
        r: Redis,
        keys: Keys,
        settings: Settings,
        queues: tuple[str, ...] = ("default",),
        concurrency: Optional[int] = None,
        name: Optional[str] = None,
        burst: bool = False,
        stop_grace: float = 10.0,
    ) -> None:
        self.r = r
        self.keys = keys
        self.settings = settings
        self.queues = tuple(queues)
        self.concurrency = concurrency or settings.worker_concurrency
        self.name = name or f"{host_of(settings)}.{os.getpid()}.{uuid.uuid4().hex[:4]}"
        self.burst = burst
        self.stop_grace = stop_grace
        self.events = Events(r, keys)  # which events have listeners (cached; read at most once a second)
        self.state = State(keys, settings, self.events)
        self.link = Link(r)  # claims and finishes, the hot path's own connection (link.py)
        self.dispatcher = Dispatcher(self.link, keys, settings, self.name, self.events)  # direct dispatches
        self.janitor = Janitor(r, keys, settings)
        self.active: dict[str, Active] = {}
        self.outbox = Outbox(r, keys, self.state, settings.data_dir, self.name)  # ended, not yet in Redis
        self.outage = Outage(f"worker {self.name}")
        self.stats = WorkerStats()
        self.stopping = False
        self.forced = False
        self._stop_at = 0.0
        self._control: deque[str] = deque()
        self._want_work = threading.Event()
        self._quit_waiter = threading.Event()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._last_beat = 0.0  # when the loop last beat and did its housekeeping (time.time())
        self._beat_sent = 0.0  # when the last beat that Redis acknowledged was sent, by anyone (time.monotonic())
        self._loop_at = time.monotonic()  # when the loop last began a step
        self._beat_lock = threading.Lock()
        self._last_tail = 0.0
        self._next_spill_scan = 0.0
        self._alive_until = 0.0  # monotonic time until which this worker's heartbeat key surely exists
        self._registered = False  # a heartbeat has been acknowledged since start
        self._needs_register = True
        self._recheck = False  # a CLAIM's reply was lost: look for what it claimed in the inflight list
        self.guardian: Optional[Guardian] = None
        self.fence = SelfFence(settings.worker_ttl, lambda: tuple(self.active.values()), f"worker {self.name}")
        self.orphans = Orphans()  # what commands leave behind outside their groups (commands/reaper.py)
        self._rq_registered = False  # RQ's record of this worker was written (store/rqworker.py)
        self._rq_state = ""  # the state last written to RQ's worker hash
        self.spool_dir = settings.data_dir / "spool"
        # The worker's own environment, read once: $VARS expand from it and commands inherit it.
        self._env = CleanEnv.of(os.environ)

    # -- lifecycle --------------------------------------------------------------------------------
    def run(self) -> None:
        """Register, loop over step() until stopped (or, with burst, until idle), then clean up."""
        self.start()
        try:
            while not self.done():
                try:
                    self.step()
                except Exception:
                    log.exception("worker %s: step failed; trying again", self.name)
                    time.sleep(1.0)
        finally:
            self.close()

    def start(self) -> None:
        """Start the guardian and the wake-up thread, and register if Redis answers (else the first step does)."""
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.guardian = Guardian.start(grace=self.settings.kill_grace)
        self._env.update(self.guardian.environment())
        self.orphans.adopt()
        self.fence.start()
        self._attempt(self._register)
        threading.Thread(target=self._waiter, name="angora-waiter", daemon=True).start()
        threading.Thread(target=self._beater, name="angora-heartbeat", daemon=True).start()

    def done(self) -> bool:
        """True when the loop should end: nothing running, and nothing unrecorded unless the grace is over."""
        if self.active:
            return False
        if self.outbox and not self.forced and not (self.stopping and time.monotonic() >= self._stop_at):
            return False
        return self.stopping or (self.burst and self._idle_checked)

    _idle_checked = False

    def request_stop(self, signum: int = signal.SIGTERM, frame: Any = None) -> None:
        """First signal: stop claiming, let commands finish for stop_grace, then hand them back. Second: now."""
        if self.stopping:
            self.forced = True
            self._stop_at = 0.0
        else:
            self.stopping = True
            self._stop_at = time.monotonic() + self.stop_grace
            log.info("worker %s: stopping (%d running; grace %.0fs)", self.name, len(self.active), self.stop_grace)
        self._wake()

    def close(self) -> None:
        """Record what is left (on disk if Redis cannot be reached), unregister, stop the thread and the guardian."""
        self._quit_waiter.set()
        self.stopping = True  # no claim rides along; what a lost claim took is handed back
        try:
            if self._recheck:
                self._recheck_inflight(time.time())
            if self.outbox:
                self._record(time.time())
        except Exception as e:
            log.warning("worker %s: could not record %d end(s): %s", self.name, len(self.outbox), e)
        if self.outbox:
            # Not unregistered: the heartbeat expires on its own, which leaves the next worker on this host time
            # to record the file before the janitor replays these executions.
            path = self.outbox.spill()
            log.warning("worker %s: %d end(s) not recorded; written to %s for the next worker on this host",
                        self.name, len(self.outbox), path)
        else:
            self._unregister()
        self.orphans.release(self._known_pids())
        if self.guardian is not None:
            self.guardian.close()
        self.fence.stop()

    def _unregister(self) -> None:
        """Leave: the heartbeat goes, and the janitor step for this worker replays whatever its inflight list
        still holds (nothing, normally) and removes its name."""
        try:
            with self._beat_lock, self.r.pipeline() as p:  # no beat of the heartbeat thread lands after this
                p.delete(self.keys.worker_alive(self.name))
                p.hdel(self.keys.heartbeats(), f"worker:{self.name}")
                p.execute()
            self.janitor.reap_worker(self.name)
            if self._rq_registered:
                with self.r.pipeline() as p:
                    rqworker.death(p, self.name, self._rq_queues(), time.time())
                    p.execute()
        except RedisError as e:
            log.warning("worker %s: could not unregister (the janitor will once the heartbeat expires): %s",
                        self.name, e)

    def _register(self) -> None:
        """Hand anything an earlier process of this name left claimed to the janitor, then register with RQ."""
        self.r.delete(self.keys.worker_alive(self.name))
        self.janitor.reap_worker(self.name)
        self._needs_register = False
        try:
            address = rqworker.client_address(self.r, self.name)
            with self.r.pipeline() as p:
                rqworker.birth(p, self.name, self._rq_queues(), self.settings.worker_ttl, address, time.time())
                self._rq_state = ""  # birth writes a fresh hash: the state goes with it
                self._show_state(busy=False, pipe=p)
                p.execute()
            self._rq_registered = True
        except Exception as e:  # rq-dashboard visibility only; never fatal
            log.warning("worker %s: could not register with RQ: %s", self.name, e)
            self._rq_registered = False
            self._rq_state = ""

    def _rq_queues(self) -> list[str]:
        """The names RQ knows this worker's queues by."""
        return [self.keys.rq_name(q) for q in self.queues]

    # -- one iteration ----------------------------------------------------------------------------
    def step(self, max_wait: float = 1.0) -> int:
        """Claim work for free slots, wait for something to happen, record what finished."""
        self._loop_at = time.monotonic()
        now = time.time()
        claimed = 0
        if self._online(now) and not self.stopping and not self._claimed_at_reap:
            claimed = self._attempt(self._claim, now) or 0
        self._claimed_at_reap = False
        if self.burst and not claimed and not self.active and not self.outbox and not self.outage.down:
            self._idle_checked = True
            return 0
        free = self.concurrency - len(self.active)
        if free > 0 and not self.stopping:
            self._want_work.set()
        else:
            self._want_work.clear()
        self._wait(self._wait_timeout(max_wait, claimed))
        self._handle_control()
        self._handle_stop()
        finished = self._reap(time.time())
        if self.outbox and not self.outage.down:
            self._attempt(self._record, time.time())
        return finished

    _claimed_at_reap = False  # the last reap claimed too: the next step need not ask again

    def _claim(self, now: float) -> int:
        free = self.concurrency - len(self.active)
        if free <= 0:
            return 0
        try:
            reply = claim_call(self.keys, self.settings, self.name, self.queues, now, free,
                               self.events.any()).run(self.link)
        except BaseException:
            self._recheck = True  # it may have run: what it claimed waits in the inflight list
            raise
        return self._start_claimed(reply)

    def _start_claimed(self, reply: list) -> int:
        """Start the executions of a CLAIM reply (id, spec, fields per execution)."""
        self.stats.claims += 1
        if not reply:
            return 0  # most claims find nothing (a bell another worker answered, a step after a record)
        n = 0
        try:
            with spawn.batch():
                for i in range(0, len(reply), 3):
                    self._start(Claimed.from_claim(reply[i], reply[i + 1], reply[i + 2]))
                    n += 1
        finally:
            if self.guardian is not None:
                self.guardian.flush()
        if n:
            self._show_state(busy=True)
        return n

    def _show_state(self, busy: bool, pipe: Any = None) -> None:
        """RQ's worker state (rq-dashboard, `rq info`): `busy` as soon as a command starts, `idle` (written by the
        heartbeat) once none runs. Written only when it changes: a worker that stays busy pays nothing."""
        state = "busy" if busy else "idle"
        if state != self._rq_state:
            self._rq_state = state
            (pipe if pipe is not None else self.r).hset(K.rq_worker(self.name), RqWorker.state, state)

    def _start(self, ex: Claimed) -> None:
        cmd = runner.start(command_spec(ex, self.settings, str(self.spool_dir), self._env))
        self.active[ex.id] = Active(ex, cmd)
        self.stats.started += 1
        if self.guardian is not None and cmd.pgid:
            self.guardian.track(cmd.pgid)
        try:
            self._sel.register(cmd.fileno(), selectors.EVENT_READ, ex.id)
        except (ValueError, OSError):
            pass  # already finished (spawn error): the next poll reports it

    def _wait_timeout(self, max_wait: float, claimed: int) -> float:
        if claimed and len(self.active) < self.concurrency:
            # There may be more work queued: claim again right away. Under load this polling beats waiting for a
            # bell (/send: 1,236-1,263 jobs/s with it, 1,060-1,085 without, back to back); its cost is at a
            # trickle, where the empty claim can hold up the reap of a short command (3-job chain p50 7.4-8.5 ms
            # with it, 6.6-7.1 without, in the same session).
            return 0.0
        deadlines = [d for a in self.active.values() if (d := a.cmd.next_deadline()) is not None]
        if (sweep := self.orphans.next_deadline()) is not None:
            deadlines.append(sweep)
        # The next heartbeat is due in time whatever else the loop waits for.
        timeout = min(max_wait, max(0.0, self._last_beat + self.settings.heartbeat_every - time.time()))
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - time.time()))
        if self.stopping and self._stop_at:
            timeout = min(timeout, max(0.0, self._stop_at - time.monotonic()))
        if self.outage.down:
            timeout = min(timeout, self.outage.wait())
        return timeout

    def _wait(self, timeout: float) -> None:
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass

    def _reap(self, now: float) -> int:
        """Poll every running command; keep the end of each that finished until Redis has it."""
        n = 0
        for xid, a in list(self.active.items()):
            outcome = a.cmd.poll(now)
            if outcome is not None:
                if a.fenced:
                    outcome = dataclasses.replace(outcome, reason=FENCED)
                hand_back = a.hand_back or (self.stopping and stopped_with_us(outcome))
                self.outbox.add(Unrecorded(xid, self.name, outcome, a.cmd.pid or 0, hand_back, a.ex, a.checked,
                                           a.live))
                del self.active[xid]
                self._forget(a)
                self.orphans.ended(xid, outcome.reason, now)
                n += 1
        self.orphans.step(now, self._known_pids, self.active.keys)
        if self.guardian is not None:
            self.guardian.flush()
        self.stats.finished += n
        return n

    # -- recording ends ---------------------------------------------------------------------------
    def _record(self, now: float) -> None:
        """Record what ended: in one transaction (with the next claim) while no janitor can have taken this
        worker's executions, else one by one after a check. What is not recorded stays for the next try."""
        sure = self._alive_certain()
        batch = self.outbox.sure() if sure else []
        if batch:
            self._record_batch(batch, now)
        self.outbox.record_checked(now, everything=not sure, confirm=lambda: self._replicated(renew=True))

    def _record_batch(self, batch: list[Unrecorded], now: float) -> None:
        free = self.concurrency - len(self.active)
        claim = None
        if free > 0 and not self.stopping:
            # The next claim rides in the same round trip as this batch's records.
            claim = claim_call(self.keys, self.settings, self.name, self.queues, now, free, self.events.any())
        rq_worker = K.rq_worker(self.name)
        with self.r.pipeline() as pipe:
            finished = Finished(self.name, now)
            for u in batch:
                self.outbox.write(pipe, u, u.ex, now, finished)  # type: ignore[arg-type]  # sure() has an ex
            calls = self._dispatch_direct(finished, now, free if claim is not None else 0)
            marks = [m for _, ms in calls for m in ms]
            try:
                if not pipe.command_stack and finished.rows and len(calls) <= 1:
                    # Nothing else to write (no message to the stream, replay, release or hand-back): one call
                    # that checks the executions are still ours itself (FINISH, or RECORD: the direct dispatch of
                    # what they send, then FINISH), and the next claim, in one round trip.
                    one = (self.state.record_call(finished, calls[0][0], rq_worker) if calls
                           else self.state.finish_call(finished, rq_worker, guard=True))
                    written, reply = self._finish_alone(one, claim)
                else:
                    for call, _ in calls:
                        call.queue(pipe)  # before FINISH: the runs count them first
                    self.state.record(pipe, finished, rq_worker)  # one FINISH call for the whole batch
                    guard = still_ours(self.keys, self.name, [u.xid for u in batch])
                    if claim is None:
                        written, _ = self.link.execute_then(pipe, None, guard)
                    else:
                        written, reply = claim.run_after(self.link, pipe, guard)
            except BaseException:
                self.outbox.doubt(batch)  # applied or not, nobody can tell
                self._recheck = self._recheck or claim is not None
                raise
        self.stats.finalizes += 1
        if claim is not None:
            self._start_claimed(reply)
            self._claimed_at_reap = True
        if written is None:
            # Some execution was no longer ours (replayed by a janitor while this process stalled): nothing was
            # written; each end goes again on its own, fenced, and a refused one is kept as `late`.
            log.warning("worker %s: %d end(s) not recorded in one go: some execution is no longer ours",
                        self.name, len(batch))
            self.outbox.doubt(batch)
            return
        try:
            replicated = self._replicated()
        except BaseException:
            self.outbox.doubt(batch)
            raise
        if replicated:
            self.outbox.drop(batch)
            self.dispatcher.recorded(marks, now)  # the specs its direct dispatch recorded are kept
        else:
            self.outbox.doubt(batch)  # kept, and written again (fenced) if a failover lost them

    def _finish_alone(self, finish: Bound, claim: Optional[Bound]) -> tuple[Optional[list], Any]:
        """A guarded FINISH (and the next CLAIM) in one round trip: (None when the batch was not written because
        some execution is no longer ours, the claim's reply)."""
        if claim is None:
            done, reply = finish.run(self.link), None
        else:
            done, reply = run_both(self.link, finish, claim)
        return (None if int(done) < 0 else [done]), reply

    def _replicated(self, renew: bool = False) -> bool:
        """With ANGORA_DURABILITY=replicated, whether a replica has every write this worker's Link made (WAIT);
        always True otherwise. `renew`: write the heartbeat first, so the WAIT also covers the writes made on other
        connections before it (the fenced records): a replica receives the writes in the primary's order."""
        wait = wait_command(self.settings)
        if wait is None:
            return True
        commands: list[Any] = [wait]
        if renew:
            ttl_ms = int(self.settings.worker_ttl * 1000)
            commands.insert(0, ("SET", self.keys.worker_alive(self.name), 1, "PX", ttl_ms))
        try:
            confirm(self.link.calls(commands)[-1], "the worker's records")
        except NotReplicated as e:
            log.warning("worker %s: %s; kept to be written again", self.name, e.message)
            return False
        return True

    def _dispatch_direct(self, finished: Finished, now: float,
                         free: int) -> list[tuple[Bound, list[tuple[str, str, str]]]]:
        """The dispatch of the messages the batch's follow records cover, one DISPATCH call per definitions version
        (a chain keeps the version it started with), each with what it records (Dispatcher.recorded). `free`: the
        slots of this worker's claim that follows in the same round trip (0: none follows)."""
        by_version: dict[str, Outgoing] = {}
        for version, msg, jobs in finished.direct:
            out = by_version.setdefault(version, Outgoing([], []))
            out.dispatches += [(len(out.messages), job) for job in jobs]
            out.messages.append(("", msg, ""))
        # What this worker's own claim takes right after needs no bell (it would wake another worker for nothing).
        mine = len(by_version) == 1 and all(job.queue in self.queues for o in by_version.values()
                                             for _, job in o.dispatches)
        return [self.dispatcher.direct(out, version, now, free if mine else 0) for version, out in by_version.items()]

    def _alive_certain(self) -> bool:
        """True while this worker's heartbeat key surely exists, so no janitor can take its executions."""
        return not self.outage.down and time.monotonic() < self._alive_until

    def _recheck_inflight(self, now: float) -> None:
        """After a CLAIM whose reply was lost: start what it claimed (hand it back when stopping)."""
        found = lost_claims(self.r, self.keys, self.name, set(self.active) | {u.xid for u in self.outbox.items})
        self._recheck = False
        if found:
            log.warning("worker %s: %d claimed execution(s) found again after a lost reply", self.name, len(found))
        if self.stopping:
            unrun = runner.Outcome(None, None, "killed", now, now, 0.0, "")
            for ex in found:
                self.outbox.add(Unrecorded(ex.id, self.name, unrun, hand_back=True, ex=ex))
            return
        with spawn.batch():
            for ex in found:
                self._start(ex)
        if self.guardian is not None:
            self.guardian.flush()

    def _known_pids(self) -> set[int]:
        """This worker's children that it started: its commands' leaders and its guardian."""
        pids = {a.cmd.pid for a in self.active.values() if a.cmd.pid}
        if self.guardian is not None:
            pids.add(self.guardian.pid)
        return pids

    def _forget(self, a: Active) -> None:
        try:
            self._sel.unregister(a.cmd.fileno())
        except (KeyError, ValueError, OSError):
            pass
        if self.guardian is not None and getattr(a.cmd, "pgid", None):
            self.guardian.untrack(a.cmd.pgid)
        a.cmd.close()

    # -- control, stop, heartbeat -----------------------------------------------------------------
    def _handle_control(self) -> None:
        while self._control:
            verb, _, xid = self._control.popleft().partition(" ")
            a = self.active.get(xid)
            if verb == "kill" and a is not None:
                log.info("worker %s: killing execution %s (%s)", self.name, xid, a.ex.spec.name)
                a.cmd.kill("killed")

    def _handle_stop(self) -> None:
        if not self.stopping or not self.active:
            return
        if self.forced or time.monotonic() >= self._stop_at:
            for a in self.active.values():
                if not a.hand_back:
                    a.hand_back = True
                    a.cmd.kill("killed")

    def _online(self, now: float) -> bool:
        """Housekeeping, and recovery after an outage; False while Redis cannot be reached."""
        if not self.outage.due():
            return False
        try:
            if self._needs_register:
                self._register()
            self._housekeeping(now)
            if self._recheck:
                self._recheck_inflight(now)
        except UNREACHABLE as e:
            self._lost(e)
            return False
        self.outage.reached()
        return True

    def _attempt(self, fn: Any, *args: Any) -> Any:
        """fn(*args), or None when Redis cannot be reached (then retried after a backoff)."""
        try:
            return fn(*args)
        except UNREACHABLE as e:
            self._lost(e)
            return None

    def _lost(self, e: Exception) -> None:
        self.outage.failed(e)
        self._claimed_at_reap = False
        # Redis may come back as another server (a failover) that lacks the last writes: every end is recorded
        # fenced from now on, only on an execution still running under this worker there.
        for a in self.active.values():
            a.checked = True
        self.outbox.doubt()

    def _housekeeping(self, now: float) -> None:
        if self.outage.down or now - self._last_beat >= self.settings.heartbeat_every:
            self._beat(now)
            self._last_beat = now
            if time.monotonic() >= self._next_spill_scan:
                # Before the janitor: ends on disk are recorded before it replays their executions.
                self._next_spill_scan = time.monotonic() + SPILL_SCAN_EVERY
                self.outbox.record_spilled(now)
            self.janitor.step(now)
        if self.active and now - self._last_tail >= LIVE_TAIL_EVERY:
            self._last_tail = now
            self._live_tails(now)

    def _beat(self, now: float) -> None:
        """Refresh the heartbeat; notice when a janitor took this worker for dead meanwhile."""
        with self._beat_lock:
            self._beat_locked(now)

    def _beat_locked(self, now: float) -> None:
        sent = time.monotonic()
        with self.r.pipeline() as p:
            p.set(self.keys.worker_alive(self.name), 1, px=int(self.settings.worker_ttl * 1000))
            p.sadd(self.keys.workers(), self.name)
            p.hset(self.keys.heartbeats(), f"worker:{self.name}", repr(now))
            p.expire(K.rq_worker(self.name), int(self.settings.worker_ttl) + 60)
            p.hset(K.rq_worker(self.name), "last_heartbeat", _iso(now))
            if not self.active:
                self._show_state(busy=False, pipe=p)
            added = p.execute()[1]
        self._beat_sent = max(self._beat_sent, sent)
        if added and self._registered:
            # Only a janitor removes a live worker's name: it has replayed what this worker held, so each of
            # those ends is written only if its execution is still ours (before this beat makes them look sure).
            log.warning("worker %s: taken for dead while Redis was out of reach; its executions were replayed",
                        self.name)
            for a in list(self.active.values()):
                a.checked = True
            self.outbox.doubt()
        self._alive_until = max(self._alive_until, sent + self.settings.worker_ttl * (1 - ALIVE_MARGIN))
        self.fence.renewed(sent)
        self._registered = True

    def _beater(self) -> None:
        """The heartbeat's own thread: beat whenever the loop is late with it (a pass slowed by a big janitor
        chore, a starved CPU), so a live worker is not taken for lost and its executions run twice; not for a loop
        stuck LOOP_STUCK TTLs (its lease then lapses, as a dead worker's)."""
        every, stuck = self.settings.heartbeat_every, self.settings.worker_ttl * LOOP_STUCK
        while not self._quit_waiter.wait(every / 4):
            late = time.monotonic() - self._beat_sent >= every
            if not late or not self._registered or time.monotonic() - self._loop_at > stuck:
                continue
            try:
                with self._beat_lock:
                    if not self._quit_waiter.is_set():
                        self._beat_locked(time.time())
            except Exception as e:  # never let the thread die; the loop notices an outage itself
                log.debug("worker %s: heartbeat thread: %s", self.name, e)

    def _live_tails(self, now: float) -> None:
        """Copy the output tail of commands running for over a second into Redis, for the UI's live view."""
        slow = [a for a in self.active.values() if now - a.cmd.started > LIVE_TAIL_EVERY]
        if slow:
            with self.r.pipeline(transaction=False) as p:
                for a in slow:
                    p.set(self.keys.tail(a.ex.id), a.cmd.read_tail())
                    a.live = True
                p.execute()

    def _waiter(self) -> None:
        """Block on Redis for control requests and (when there are free slots) queue bells; wake the loop."""
        control = self.keys.worker_control(self.name)
        bells = [self.keys.bell(q) for q in self.queues]
        link = Link(self.r)  # this thread's own connection; each bell costs ~30 us of CPU instead of ~100
        while not self._quit_waiter.is_set():
            try:
                watch = [control] + (bells if self._want_work.is_set() else [])
                got = link.call("BLPOP", *watch, 1)
            except RedisError:
                time.sleep(0.5)
                continue
            if got:
                key, value = (to_str(got[0]), to_str(got[1]))
                if key == control:
                    self._control.append(value)
                self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass


def claim_call(keys: Keys, settings: Settings, worker: str, queues: tuple[str, ...], now: float, free: int,
               events: bool = False) -> Bound:
    """The CLAIM call of worker `worker` for up to `free` executions from `queues` (publishing their events when
    `events`: some event has a listener)."""
    c = _claim_keys(keys, worker)
    return CLAIM.bind(
        inflight=c.inflight, paused_queues=c.paused_queues, events=c.events, stream=c.stream, runs=c.runs,
        outbox=c.outbox, work=c.work, accepted=c.accepted, unsettled=c.unsettled, outbox_cap=OUTBOX_CAP,
        events_on="1" if events else "", want=free, now=repr(now), worker=worker, host=_claim_host(settings, worker),
        started_expiry=now + settings.default_timeout + 600, now_iso=_iso(now), exec_prefix=c.exec_prefix,
        run_prefix=c.run_prefix, rq_job_prefix=c.rq_job_prefix, rq_started_prefix=c.rq_started_prefix,
        slots_prefix=c.slots_prefix, held_prefix=c.held_prefix, rq_queue_prefix=c.rq_queue_prefix,
        defs_prefix=c.defs_prefix, queues=queues,
    )


class ClaimKeys(NamedTuple):
    """The key names of a worker's CLAIM calls (built once: a worker claims at every step)."""

    inflight: str
    paused_queues: str
    events: str
    stream: str
    runs: str
    outbox: str
    work: str
    accepted: str
    unsettled: str
    exec_prefix: str
    run_prefix: str
    rq_job_prefix: str
    rq_started_prefix: str
    slots_prefix: str
    held_prefix: str
    rq_queue_prefix: str
    defs_prefix: str


@functools.lru_cache(maxsize=64)
def _claim_keys(k: Keys, worker: str) -> ClaimKeys:
    return ClaimKeys(k.worker_inflight(worker), k.paused_queues(), k.events(), k.stream(), k.runs(),
                     k.webhook_outbox(), k.work(), k.accepted(), k.runs_unsettled(), k.execution(""), k.run(""),
                     K.rq_job(""), k.rq_started(""), k.slots(""), k.held(""), k.rq_queue(""), k.definitions(""))


@functools.lru_cache(maxsize=64)
def _claim_host(settings: Settings, worker: str) -> str:
    """The host a claim records: '' when the worker's name says it (host.pid.random: not stored twice)."""
    host = host_of(settings)
    return "" if worker_host(worker) == host else host


def stopped_with_us(outcome: runner.Outcome) -> bool:
    """Whether a command ended by SIGTERM/SIGINT from outside (not a timeout or kill of ours), as when a platform
    stops every process of a host at once (Heroku does so on each deploy and daily restart): run elsewhere."""
    by_signal = outcome.signal in (signal.SIGTERM, signal.SIGINT)
    by_code = outcome.exit_code in (128 + signal.SIGTERM, 128 + signal.SIGINT)  # a shell that caught it and left
    return outcome.reason == "exit" and (by_signal or by_code)


def run_execution(execution_id: Optional[str] = None, prefix: Optional[str] = None) -> str:
    """The RQ job function: lets a stock `rq worker` run an Angora execution (in-process, one at a time).

    The execution is the RQ job's own id and the prefix ANGORA_PREFIX's (rqcompat.job_data: the arguments are
    left out of RQ's record); both are taken as arguments too."""
    from rq import get_current_job

    from angora_rq.processes.inline import run_inline

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_execution runs only inside an RQ worker")
    settings = Settings.from_env()
    return run_inline(job.connection, Keys(prefix or settings.prefix), settings, execution_id or job.id)


def _iso(ts: float) -> str:
    from angora_rq.core.rqcompat import utc_iso

    return utc_iso(ts)

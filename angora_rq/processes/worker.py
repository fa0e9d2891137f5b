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

The loop is here; its parts are processes/lease.py (the heartbeat and registration), processes/waker.py (bells
and control requests), processes/recording.py (writing ends) and store/claiming.py (the CLAIM call).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import selectors
import signal
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from angora_rq.commands import runner, spawn
from angora_rq.commands.guardian import Guardian
from angora_rq.commands.reaper import Orphans
from angora_rq.core.command import CleanEnv, command_spec
from angora_rq.core.execution import CLAIM_WIDTH, FENCED, Claimed
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.processes.janitor import Janitor, lost_claims
from angora_rq.processes.lease import Lease
from angora_rq.processes.datawatch import DataWatch
from angora_rq.processes.outage import Outage
from angora_rq.processes.outbox import Outbox, Unrecorded
from angora_rq.processes.recording import Recorder
from angora_rq.processes.selffence import SelfFence
from angora_rq.processes.spool import sweep_outputs
from angora_rq.processes.waker import Waker
from angora_rq.store.claiming import claim_call
from angora_rq.store.connection import UNREACHABLE, Redis
from angora_rq.store.dispatch import Dispatcher
from angora_rq.store.events import Events
from angora_rq.store.link import Link
from angora_rq.store.scripts import Bound
from angora_rq.store.state import State, host_of

log = logging.getLogger(__name__)
LIVE_TAIL_EVERY = 1.0
SPILL_SCAN_EVERY = 2.0
SPOOL_SWEEP_EVERY = 60.0  # the outputs files killed workers left (processes/spool.py)
QUIET = 0.02  # seconds with nothing started or ended after which a worker with a free slot hears the bells


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
        self.watch = DataWatch(r, keys, f"worker {self.name}")
        self.stats = WorkerStats()
        self.stopping = False
        self.forced = False
        self._stop_at = 0.0
        self.waker = Waker(r, keys, self.name, self.queues)  # control requests and bells
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.waker.fileno(), selectors.EVENT_READ, None)
        self._last_beat = 0.0  # when the loop last beat and did its housekeeping (time.time())
        self._last_tail = 0.0
        self._next_spill_scan = 0.0
        self._next_spool_sweep = 0.0
        self._recheck = False  # a CLAIM's reply was lost: look for what it claimed in the inflight list
        self.guardian: Optional[Guardian] = None
        self.fence = SelfFence(settings.worker_ttl, lambda: tuple(self.active.values()), f"worker {self.name}")
        self.lease = Lease(r, keys, settings, self.name, self.queues, self.fence, self.janitor,
                           busy=lambda: bool(self.active), taken=self._taken_for_dead)
        self.recorder = Recorder(r, keys, settings, self.name, self.queues, self.link, self.state, self.dispatcher,
                                 self.outbox, self.lease.tally)
        self.orphans = Orphans()  # what commands leave behind outside their groups (commands/reaper.py)
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
        self._attempt(self.lease.register)
        self.waker.start()
        self.lease.start()

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
        self.waker.wake()

    def close(self) -> None:
        """Record what is left (on disk if Redis cannot be reached), unregister, stop the thread and the guardian."""
        self.waker.stop()
        self.lease.stop()
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
            self.lease.unregister()
        self.orphans.release(self._known_pids())
        if self.guardian is not None:
            self.guardian.close()
        self.fence.stop()

    # -- one iteration ----------------------------------------------------------------------------
    def step(self, max_wait: float = 1.0) -> int:
        """Claim work for free slots, wait for something to happen, record what finished."""
        self.lease.loop_at = time.monotonic()
        now = time.time()
        claimed = 0
        if self._online(now) and not self.stopping and not self._claimed_at_reap:
            claimed = self._attempt(self._claim, now) or 0
        self._claimed_at_reap = False
        if self.burst and not claimed and not self.active and not self.outbox and not self.outage.down:
            self._idle_checked = True
            return 0
        self._wait(self._listen(self._wait_timeout(max_wait, claimed)))
        self._handle_control()
        self._handle_stop()
        finished = self._reap(time.time())
        if self.outbox and not self.outage.down:
            self._attempt(self._record, time.time())
        return finished

    _claimed_at_reap = False  # the last reap claimed too: the next step need not ask again
    _busy_at = 0.0  # time.monotonic() when a command last started or ended here

    def _claim(self, now: float) -> int:
        free = self.concurrency - len(self.active)
        if free <= 0:
            return 0
        try:
            reply = self._claim_call(now, free).run(self.link)
        except BaseException:
            self._recheck = True  # it may have run: what it claimed waits in the inflight list
            raise
        return self._start_claimed(reply)

    def _claim_call(self, now: float, free: int) -> Bound:
        return claim_call(self.keys, self.settings, self.name, self.queues, now, free, self.events.any())

    def _start_claimed(self, reply: list) -> int:
        """Start the executions of a CLAIM reply (CLAIM_WIDTH values per execution)."""
        self.stats.claims += 1
        if not reply:
            return 0  # most claims find nothing (a bell another worker answered, a step after a record)
        n = 0
        try:
            with spawn.batch():
                for i in range(0, len(reply), CLAIM_WIDTH):
                    self._start(Claimed.from_claim(reply[i:i + CLAIM_WIDTH]))
                    n += 1
        finally:
            if self.guardian is not None:
                self.guardian.flush()
        if n:
            self.lease.show(busy=True)
        return n

    def _start(self, ex: Claimed) -> None:
        cmd = runner.start(command_spec(ex, self.settings, str(self.spool_dir), self._env))
        self.active[ex.id] = Active(ex, cmd)
        self.stats.started += 1
        self._busy_at = time.monotonic()
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
        if self.outage.down:
            # What needs Redis (the heartbeat, a settle step) waits for the outage's next attempt: counted as due, the
            # heartbeat missed while Redis was away made every wait 0, and the loop spun a core through the outage.
            timeout = min(max_wait, self.outage.wait())
        else:
            # The next heartbeat is due in time whatever else the loop waits for.
            timeout = min(max_wait, max(0.0, self._last_beat + self.settings.heartbeat_every - time.time()))
            if (settle := self.janitor.next_settle()) is not None:
                deadlines.append(settle)
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - time.time()))
        if self.stopping and self._stop_at:
            timeout = min(timeout, max(0.0, self._stop_at - time.monotonic()))
        return timeout

    def _listen(self, timeout: float) -> float:
        """Whether the waker hears the bells while the loop waits up to `timeout`; the timeout to wait, shortened to
        when the worker turns quiet. A worker with a free slot hears them once quiet: nothing running, or nothing
        started or ended for QUIET. A busy one takes new work with the claim each record carries: answering the
        bells while busy spread the work over more workers in smaller claims (4-5 % more Redis commands per job
        under load, bench/README.md, thirteenth round)."""
        free = self.concurrency > len(self.active) and not self.stopping
        quiet_in = self._busy_at + QUIET - time.monotonic() if self.active else 0.0
        # Not while Redis is out of reach: no bell can come, and the waker's poke would wait on a dead connection.
        self.waker.want(free and quiet_in <= 0 and not self.outage.down, self._busy_at, free)
        return min(timeout, quiet_in) if free and quiet_in > 0 else timeout

    def _wait(self, timeout: float) -> None:
        for key, _ in self._sel.select(timeout):
            if key.data is None:
                self.waker.drain()

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
        if n:
            self._busy_at = time.monotonic()
        return n

    # -- recording ends ---------------------------------------------------------------------------
    def _record(self, now: float) -> None:
        """Record what ended: in one round trip (with the next claim) while no janitor can have taken this
        worker's executions, else one by one after a check. What is not recorded stays for the next try."""
        sure = self._alive_certain()
        batch = self.outbox.sure() if sure else []
        if batch:
            self._record_batch(batch, now)
        self.outbox.record_checked(now, everything=not sure, confirm=lambda: self.recorder.replicated(renew=True))

    def _record_batch(self, batch: list[Unrecorded], now: float) -> None:
        free = self.concurrency - len(self.active)
        # The next claim rides in the same round trip as this batch's records.
        claim = self._claim_call(now, free) if free > 0 and not self.stopping else None
        try:
            written = self.recorder.write(batch, now, claim, free)
        except BaseException:
            self._recheck = self._recheck or claim is not None  # it may have run: see _recheck_inflight
            raise
        self.stats.finalizes += 1
        if claim is not None:
            self._start_claimed(written.claimed)
            self._claimed_at_reap = True
        self.recorder.settle(batch, written, now)

    def _alive_certain(self) -> bool:
        """True while this worker's heartbeat key surely exists, so no janitor can take its executions."""
        return not self.outage.down and self.lease.sure()

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
        while self.waker.control:
            verb, _, xid = self.waker.control.popleft().partition(" ")
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
            if self.lease.needs_register:
                self.lease.register()
            self._housekeeping(now)
            if self._recheck:
                self._recheck_inflight(now)
            if self.outage.reached() or self.watch.pending:
                self.watch.check()
        except UNREACHABLE as e:
            self._lost(e)
            return False
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
            self.lease.beat(now)
            self._last_beat = now
            if time.monotonic() >= self._next_spill_scan:
                # Before the janitor: ends on disk are recorded before it replays their executions.
                self._next_spill_scan = time.monotonic() + SPILL_SCAN_EVERY
                self.outbox.record_spilled(now)
            self.janitor.step(now, idle=not self.active)
            if time.monotonic() >= self._next_spool_sweep:
                self._next_spool_sweep = time.monotonic() + SPOOL_SWEEP_EVERY
                sweep_outputs(self.r, self.keys, self.spool_dir, now)
        elif not self.outage.down:
            self.janitor.settle(now, idle=not self.active)  # a pass steps on, heartbeat or not (janitor.py)
        if self.active and now - self._last_tail >= LIVE_TAIL_EVERY:
            self._last_tail = now
            self._live_tails(now)

    def _taken_for_dead(self) -> None:
        """A janitor took this worker for dead (Redis was out of reach for longer than its lease) and replayed what
        it held: each of those ends is written only if its execution is still ours."""
        for a in list(self.active.values()):
            a.checked = True
        self.outbox.doubt()

    def _live_tails(self, now: float) -> None:
        """Copy the output tail of commands running for over a second into Redis, for the UI's live view."""
        slow = [a for a in self.active.values() if now - a.cmd.started > LIVE_TAIL_EVERY]
        if slow:
            with self.r.pipeline(transaction=False) as p:
                for a in slow:
                    p.set(self.keys.tail(a.ex.id), a.cmd.read_tail())
                    a.live = True
                p.execute()


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


"""Recording a worker's ended commands: a batch of ends from its outbox in one round trip, with the direct dispatch
of the messages they send and the worker's next claim riding along.

A batch is written only while every execution in it is still the worker's (FINISH's guard, or `still_ours` for a
transaction), so a janitor's replay is never recorded over. A batch whose reply was lost, or that was not written,
stays in the outbox in doubt: each end goes again on its own, fenced (processes/outbox.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.processes.outbox import Outbox, Unrecorded
from angora_rq.store.connection import Redis
from angora_rq.store.dispatch import Dispatcher, Outgoing
from angora_rq.store.fence import still_ours
from angora_rq.store.link import Link
from angora_rq.store.replication import NotReplicated, confirm, wait_command
from angora_rq.store.rqworker import Tally
from angora_rq.store.scripts import Bound, run_both
from angora_rq.store.state import Finished, State, finish_reply

log = logging.getLogger(__name__)
Marks = list[tuple[str, str, str]]  # what a direct dispatch recorded (Dispatcher.recorded)


@dataclass(frozen=True)
class Written:
    """What `Recorder.write` did: the FINISH reply (None when nothing was written because some execution is no
    longer the worker's), the claim's reply, what the direct dispatch recorded, and the batch's counts for RQ."""

    done: Optional[list]
    claimed: Any
    marks: Marks
    counts: tuple[int, int, float]  # succeeded, failed, seconds run


class Recorder:
    """Worker `name`'s writer of ends: `write` a batch (and a claim) in one round trip, then `settle` it. RQ's
    counters of the worker move by `tally`, which the heartbeat writes (store/rqworker.Tally)."""

    def __init__(self, r: Redis, keys: Keys, settings: Settings, name: str, queues: Sequence[str], link: Link,
                 state: State, dispatcher: Dispatcher, outbox: Outbox, tally: Tally) -> None:
        self.r, self.keys, self.settings, self.name, self.queues = r, keys, settings, name, tuple(queues)
        self.link, self.state, self.dispatcher, self.outbox, self.tally = link, state, dispatcher, outbox, tally

    def write(self, batch: list[Unrecorded], now: float, claim: Optional[Bound], free: int) -> Written:
        """Record `batch` and run `claim` (None: no claim; `free`: the slots it asks for) in the same round trip.
        What the round trip raised is raised, the batch then in doubt."""
        with self.r.pipeline() as pipe:
            finished = Finished(self.name, now)
            for u in batch:
                self.outbox.write(pipe, u, u.ex, now, finished)  # type: ignore[arg-type]  # sure() has an ex
            calls = self._dispatch_direct(finished, now, free if claim is not None else 0)
            marks = [m for _, ms in calls for m in ms]
            reply = None
            try:
                if not pipe.command_stack and finished.rows and len(calls) <= 1:
                    # Nothing else to write (no message to the stream, replay, release or hand-back): one call
                    # that checks the executions are still ours itself (FINISH, or RECORD: the direct dispatch of
                    # what they send, then FINISH), and the next claim, in one round trip.
                    one = (self.state.record_call(finished, calls[0][0]) if calls
                           else self.state.finish_call(finished, guard=True))
                    written, reply = self._finish_alone(one, claim)
                else:
                    for call, _ in calls:
                        call.queue(pipe)  # before FINISH: the runs count them first
                    self.state.record(pipe, finished)  # one FINISH call for the whole batch
                    guard = still_ours(self.keys, self.name, [u.xid for u in batch])
                    if claim is None:
                        written, _ = self.link.execute_then(pipe, None, guard)
                    else:
                        written, reply = claim.run_after(self.link, pipe, guard)
            except BaseException:
                self.outbox.doubt(batch)  # applied or not, nobody can tell
                raise
        if written and finished.rows:  # FINISH's reply: RECORD's, or the transaction's last
            _, errors = finish_reply(written[-1])
            if errors:  # written once, the rest of each end with them: going again would count them twice
                log.error("worker %s: %d end(s) recorded without some of their records (%s)", self.name,
                          len(finished.ids), "; ".join(errors))
        n = len(finished.ids)
        return Written(written, reply, marks, (finished.ok, n - finished.ok, finished.seconds))

    def settle(self, batch: list[Unrecorded], written: Written, now: float) -> None:
        """After `write`: drop the batch from the outbox once Redis (and a replica, when asked) has it."""
        if written.done is None:
            # Some execution was no longer ours (replayed by a janitor while this process stalled): nothing was
            # written; each end goes again on its own, fenced, and a refused one is kept as `late`.
            log.warning("worker %s: %d end(s) not recorded in one go: some execution is no longer ours",
                        self.name, len(batch))
            self.outbox.doubt(batch)
            return
        try:
            replicated = self.replicated()
        except BaseException:
            self.outbox.doubt(batch)
            raise
        if replicated:
            self.outbox.drop(batch)
            self.dispatcher.recorded(written.marks, now)  # the specs its direct dispatch recorded are kept
            self.tally.add(*written.counts)
        else:
            self.outbox.doubt(batch)  # kept, and written again (fenced) if a failover lost them

    def replicated(self, renew: bool = False) -> bool:
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

    def _finish_alone(self, finish: Bound, claim: Optional[Bound]) -> tuple[Optional[list], Any]:
        """A guarded FINISH (and the next CLAIM) in one round trip: (None when the batch was not written because
        some execution is no longer ours, the claim's reply)."""
        if claim is None:
            done, reply = finish.run(self.link), None
        else:
            done, reply = run_both(self.link, finish, claim)
        return (None if finish_reply(done)[0] < 0 else [done]), reply

    def _dispatch_direct(self, finished: Finished, now: float, free: int) -> list[tuple[Bound, Marks]]:
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

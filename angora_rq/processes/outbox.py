"""Outcomes a worker has not recorded in Redis yet: kept in memory, written to disk when the worker must exit.

A command's end is recorded once Redis has it. Until then the worker keeps it (`Unrecorded`); a worker that must
exit while Redis cannot be reached writes what it still holds to `<data dir>/outcomes/<prefix>/<worker>.jsonl`, and
the next worker on the host records those lines (fenced: only while each execution is still `running` under the
worker that ran it). If no worker comes, the janitor replays those executions once the dead worker's heartbeat has
expired: at least once, either way.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional
from urllib.parse import quote

from angora_rq.commands.runner import Outcome
from angora_rq.core.execution import Claimed, OutcomeLike
from angora_rq.core import keys as K
from angora_rq.core.keys import Keys
from angora_rq.core.schema import RqWorker
from angora_rq.store.connection import Redis, lasting
from angora_rq.store.fence import note_late, write_if_running
from angora_rq.store.state import Finished, State, host_of, load_claimed

log = logging.getLogger(__name__)


OUTCOME_FIELDS = tuple(f.name for f in dataclasses.fields(Outcome))


@dataclass
class Unrecorded:
    """An execution whose command has ended (or was stopped to be handed back) and whose record is not in Redis."""

    xid: str
    owner: str  # the worker that ran it: the execution's `worker` field while it is running
    outcome: OutcomeLike
    pid: int = 0
    hand_back: bool = False
    ex: Optional[Claimed] = None  # what the worker claimed; None for lines read back from disk
    checked: bool = False  # record only after checking the execution is still running under `owner`
    live: bool = True  # its tail key may have been written while it ran (the worker knows; a spilled line may)

    def to_json(self) -> str:
        """One line of a spill file."""
        outcome = {name: getattr(self.outcome, name, None) for name in OUTCOME_FIELDS}
        outcome["output"] = (outcome["output"] or b"").decode("latin-1")  # bytes, as text JSON can hold (lossless)
        return json.dumps({"id": self.xid, "owner": self.owner, "pid": self.pid, "hand_back": self.hand_back,
                           "outcome": outcome})

    def late_json(self, host: str) -> str:
        """What a refused end keeps on its execution: who ran it, where, and how it ended."""
        o = self.outcome
        return json.dumps({"worker": self.owner, "host": host, "reason": o.reason, "exit_code": o.exit_code,
                           "signal": o.signal, "started": o.started, "ended": o.ended})

    @classmethod
    def from_json(cls, line: str) -> "Unrecorded":
        """Read a spill file's line back (always checked: the writer is gone)."""
        d = json.loads(line)
        outcome = {**d["outcome"], "output": d["outcome"].get("output", "").encode("latin-1")}
        return cls(d["id"], d["owner"], Outcome(**outcome), d.get("pid", 0), d.get("hand_back", False),
                   checked=True)


def spill_folder(data_dir: Path, prefix: str) -> Path:
    """Where the workers of one deployment (key prefix) on this host leave what they could not record."""
    return data_dir / "outcomes" / quote(prefix, safe="")


def spill(folder: Path, worker: str, items: list[Unrecorded]) -> Path:
    """Write items to `<folder>/<worker>.jsonl` (complete or not at all: a temporary file, fsync, rename)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{quote(worker, safe='')}.jsonl"
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.writelines(item.to_json() + "\n" for item in items)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def spilled(folder: Path) -> Iterator[list[tuple[Path, list[Unrecorded]]]]:
    """The spill files no other worker is reading, locked while the caller records them.

    The caller deletes each file it has recorded; a worker that dies meanwhile drops its locks with its process.
    """
    held: list[Any] = []
    found: list[tuple[Path, list[Unrecorded]]] = []
    try:
        for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
            try:
                f = open(path)
            except FileNotFoundError:
                continue  # recorded and removed by another worker just now
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            held.append(f)
            try:
                found.append((path, [Unrecorded.from_json(line) for line in f if line.strip()]))
            except (ValueError, KeyError, TypeError) as e:
                log.error("unreadable outcomes file %s left in place: %s", path, e)
        yield found
    finally:
        for f in held:
            f.close()


def count_for_rq(pipe: Any, worker: str, outcomes: list[Any]) -> None:
    """RQ's counters of a worker (rq-dashboard, `rq info`: finished, failed, working time), on `pipe`."""
    if not outcomes:
        return
    key, ok = K.rq_worker(worker), sum(1 for o in outcomes if o.ok)
    if ok:
        pipe.hincrby(key, RqWorker.successful_job_count, ok)
    if len(outcomes) > ok:
        pipe.hincrby(key, RqWorker.failed_job_count, len(outcomes) - ok)
    pipe.hincrbyfloat(key, RqWorker.total_working_time, sum(o.duration for o in outcomes))


class Outbox:
    """The ends one worker holds until Redis has them, oldest first; writes the ones in doubt, fenced."""

    def __init__(self, r: Redis, keys: Keys, state: State, data_dir: Path, owner: str) -> None:
        self.r = r
        self.keys = keys
        self.state = state
        self.owner = owner
        self.items: list[Unrecorded] = []
        self.folder = spill_folder(data_dir, keys.prefix)

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Unrecorded) -> None:
        """Keep an end until it is recorded."""
        self.items.append(item)

    def sure(self) -> list[Unrecorded]:
        """The ends that may go in the usual transaction (nothing in doubt about them)."""
        return [u for u in self.items if not u.checked and u.ex is not None]

    def doubt(self, items: Optional[list[Unrecorded]] = None) -> None:
        """From now on write these (default: all) only after checking their executions are still the owner's."""
        for u in self.items if items is None else items:
            u.checked = True

    def drop(self, done: list[Unrecorded]) -> None:
        """Forget ends that are recorded (or that turned out to be someone else's to record)."""
        gone = {id(u) for u in done}
        self.items = [u for u in self.items if id(u) not in gone]

    def write(self, pipe: Any, u: Unrecorded, ex: Claimed, now: float, batch: Optional[Finished] = None) -> None:
        """Queue an end's record on a transaction: hand the execution back, or finalize it (its record into
        `batch` when given: the caller queues the batch's one FINISH call, State.record)."""
        if u.hand_back:
            self.state.hand_back(pipe, ex, u.owner, now)
        else:
            self.state.finalize(pipe, ex, u.outcome, now, worker=u.owner, live=u.live, batch=batch)

    def record_checked(self, now: float, everything: bool = False,
                       confirm: Optional[Callable[[], bool]] = None) -> None:
        """Write the ends in doubt (or all of them) one by one, each fenced (fence.py); forget them once written
        (or found recorded) and, when given, `confirm()` says they are safe (replicated)."""
        done = []
        for u in [u for u in self.items if everything or u.checked]:
            try:
                if self._record_one(u, now):
                    done.append(u)
            except Exception as e:
                if not lasting(e):
                    raise
                # One end that cannot be written (a key of the wrong type) must not hold up those behind it.
                log.error("worker %s: the end of execution %s cannot be recorded (%s); kept, tried again, and the "
                          "other ends go on", self.owner, u.xid, e)
        if done and (confirm is None or confirm()):
            self.drop(done)

    def _record_one(self, u: Unrecorded, now: float) -> bool:
        """Write one end if its execution is still running under the worker that ran it; True once done with it."""
        def write(pipe: Any, fields: dict[str, str]) -> None:
            self.write(pipe, u, u.ex or load_claimed(self.r, self.keys, u.xid, fields), now)
            if not u.hand_back:
                count_for_rq(pipe, u.owner, [u.outcome])

        done = write_if_running(self.r, self.keys.execution(u.xid), u.owner, write)
        if done is False and not u.hand_back and note_late(
                self.r, self.keys.execution(u.xid), u.late_json(host_of(self.state.settings)), u.owner,
                u.outcome.ended):
            log.warning("worker %s: execution %s was recorded or replayed by another; this end (%s) is refused and "
                        "kept on it as `late`", self.owner, u.xid, u.outcome.reason)
        return done is not None

    def record_spilled(self, now: float) -> None:
        """Record the ends that workers of this host wrote to disk when they had to exit during an outage."""
        with spilled(self.folder) as files:
            for path, items in files:
                if all([self._record_one(u, now) for u in items]):
                    path.unlink(missing_ok=True)
                    log.warning("worker %s: recorded %d end(s) left on disk in %s", self.owner, len(items), path)

    def spill(self) -> Path:
        """Write every end held to this worker's file (it must exit and Redis cannot be reached)."""
        return spill(self.folder, self.owner, self.items)

"""Group commit of the web's sends to the stream, under load: when one process has CROWD sends or more in hand, the
root messages its concurrent /send requests put on the bus go to Redis together, their SEND calls pipelined in one
round trip. Each is its own SEND, so each message is accepted, refused or answered as a repeat exactly as alone;
what a batch saves is Redis' round trips (about 30 us of its CPU for a call that arrives alone, under 1 us
pipelined: bench/README.md, seventh round). Below CROWD, sends go alone, at once and side by side, as Redis
already takes concurrent calls in one pass of its event loop.

Leader/follower, no timer: a crowded send that finds no batch in flight sends at once whatever is queued; those
that arrive meanwhile queue, and one of them, once that batch is back, sends them all in the next.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.pressure import Budget
from angora_rq.store.bus import Sent, answer_all, send_call

T = TypeVar("T")
R = TypeVar("R")

BATCH = 64  # messages per round trip at most
# Sends in hand in one process from which they are coalesced; fewer go alone, at once and side by side. A batch
# waits for the one in flight: coalescing every send cost 10 % of jobs/s and 6 % more Redis CPU per job at 2 clients
# per web process (the bench's 4 clients), as batches stayed of one or two. From 4, Redis CPU per job through /send
# at 64 clients measured 0.85-0.86 of none, and 4 clients were unchanged (bench/README.md, seventh round).
CROWD = 4


@dataclass
class _Slot(Generic[T, R]):
    """One caller's item, and its outcome once a flush carried it."""

    item: T
    done: bool = False
    result: Optional[R] = None
    error: Optional[BaseException] = None


class Coalescer(Generic[T, R]):
    """Runs `flush` over the items callers `submit` concurrently, one flush at a time, each over what is queued (at
    most `cap` items). `flush` returns one outcome per item, in order: a value to return, or an exception to raise
    in that caller; an exception it raises is raised in every caller of that batch."""

    def __init__(self, flush: Callable[[list[T]], Sequence[Union[R, BaseException]]], cap: int = BATCH) -> None:
        self.flush, self.cap = flush, cap
        self._queue: list[_Slot[T, R]] = []
        self._busy = False  # a flush is in flight
        self._cond = threading.Condition()

    def submit(self, item: T) -> R:
        """`item`'s outcome, once a flush (this caller's or another's) carried it."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
            while True:
                while self._busy and not slot.done:
                    self._cond.wait()
                if slot.done:
                    return _outcome(slot)
                self._busy = True  # the leader: flush what is queued, this caller's item among it or ahead of it
                batch, self._queue[:self.cap] = self._queue[:self.cap], []
                try:
                    self._cond.release()
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        """Flush `batch` (outside the lock) and record each slot's outcome."""
        try:
            results = list(self.flush([s.item for s in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} outcomes for {len(batch)} items")
        except BaseException as e:  # noqa: B036 - every caller of the batch gets it, the leader too
            results = [e] * len(batch)
        for slot, outcome in zip(batch, results):
            if isinstance(outcome, BaseException):
                slot.error = outcome
            else:
                slot.result = outcome
            slot.done = True


def _outcome(slot: _Slot[T, R]) -> R:
    if slot.error is not None:
        raise slot.error
    return slot.result  # type: ignore[return-value]


@dataclass(frozen=True)
class Outgoing:
    """A root message on its way to the stream: its idempotency key ('' = none), and whether any event has a
    listener (the caller's copy; None: SEND looks itself)."""

    msg: Message
    key: str
    listened: Optional[bool]


class SendBatcher:
    """One process's sends to the stream, coalesced (see the module's docstring): `submit` blocks until its batch
    is back. `budget` is read once per batch; `wait` (replication.wait_command) follows each batch."""

    def __init__(self, r: redis.Redis, keys: Keys, budget: Callable[[], Budget], key_ttl: float,
                 wait: Optional[Sequence[Any]]) -> None:
        self.r, self.keys, self.budget, self.key_ttl, self.wait = r, keys, budget, key_ttl, wait
        self._batches: Coalescer[Outgoing, Sent] = Coalescer(self._flush)
        self._inside = 0  # sends in hand (in submit)
        self._lock = threading.Lock()

    def submit(self, msg: Message, key: str = "", listened: Optional[bool] = None) -> Sent:
        """Accept `msg` (bus.submit's answer and refusals): alone, or with whatever else is sent meanwhile when this
        process has CROWD sends or more in hand."""
        with self._lock:
            self._inside += 1
            crowded = self._inside >= CROWD
        try:
            if crowded:
                return self._batches.submit(Outgoing(msg, key, listened))
            [out] = self._flush([Outgoing(msg, key, listened)])
            if isinstance(out, Exception):
                raise out
            return out
        finally:
            with self._lock:
                self._inside -= 1

    def _flush(self, batch: list[Outgoing]) -> list[Union[Sent, Exception]]:
        budget = self.budget()
        calls = [send_call(self.keys, o.msg, budget, o.key, self.key_ttl, "", listened=o.listened) for o in batch]
        return answer_all(self.r, self.keys, [o.msg for o in batch], calls, budget, self.wait)

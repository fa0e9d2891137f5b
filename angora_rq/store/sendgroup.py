"""Group commit of the web's direct sends: the root messages one process's concurrent /send requests dispatch
themselves (web/send.py direct_jobs) go to Redis together, in one SEND_DISPATCH call per batch.

Leader/follower, no timer: a request that finds no call in flight makes one at once with whatever is queued
(itself alone at a trickle: no added wait); requests that arrive meanwhile queue, and one of them, once that call
is back, sends them all in the next. One call per batch costs Redis one round trip and one script entry instead of
one per message (store/lua/send_dispatch.lua, Redis CPU per message: ~120-140 us alone, ~45-55 in batches of 4,
~35-45 in batches of 16), and no stream entry or matcher hop. Through /send (2-core VM, 3000 trivial jobs, 2 web
processes): with 4 clients the batches are mostly of one, and a job costs Redis what the stream and a matcher's
batches cost (~200-255 us of CPU) in 1.0 round trip instead of 1.7-2.2; with 64 clients, batches of ~10-30,
~150 us instead of ~220.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable, Generic, Optional, Sequence, TypeVar, Union

import redis

from angora_rq.core.keys import Keys
from angora_rq.core.pressure import Budget
from angora_rq.store.bus import Sent
from angora_rq.store.dispatch import Direct, Dispatcher, submit_directs
from angora_rq.store.link import release_link

T = TypeVar("T")
R = TypeVar("R")

BATCH = 64  # messages per call at most: past ~64, Redis' time per message grows again
BATCH_ARGS = 4096  # and about this many script arguments (a topic may start many jobs: 4 arguments each)


@dataclass
class _Slot(Generic[T, R]):
    """One caller's item, and its outcome once a flush carried it."""

    item: T
    done: bool = False
    result: Optional[R] = None
    error: Optional[BaseException] = None


class Coalescer(Generic[T, R]):
    """Runs `flush` over the items callers `submit` concurrently, one flush at a time, each over everything queued
    (at most `cap` items and `budget` of `size`; a lone item over it goes alone). `flush` returns one result per
    item, in order: a value to return, or an exception to raise in that caller; an exception it raises is raised
    in every caller of that batch."""

    def __init__(self, flush: Callable[[list[T]], Sequence[Union[R, BaseException]]], cap: int = BATCH,
                 size: Callable[[T], int] = lambda item: 1, budget: int = BATCH_ARGS) -> None:
        self.flush, self.cap, self.size, self.budget = flush, cap, size, budget
        self._queue: list[_Slot[T, R]] = []
        self._busy = False  # a flush is in flight
        self._cond = threading.Condition()

    def submit(self, item: T) -> R:
        """`item`'s result, once a flush (this caller's or another's) carried it."""
        slot: _Slot[T, R] = _Slot(item)
        with self._cond:
            self._queue.append(slot)
            while True:
                while self._busy and not slot.done:
                    self._cond.wait()
                if slot.done:
                    return self._outcome(slot)
                self._busy = True  # the leader: flush what is queued, this caller's item among it or ahead of it
                batch = self._take()
                try:
                    self._cond.release()
                    self._run(batch)
                finally:
                    self._cond.acquire()
                    self._busy = False
                    self._cond.notify_all()

    def _take(self) -> list[_Slot[T, R]]:
        """The next batch off the queue (under the lock): at least one item, within `cap` and `budget`."""
        n, total = 0, 0
        for slot in self._queue[:self.cap]:
            total += self.size(slot.item)
            if n and total > self.budget:
                break
            n += 1
        batch, self._queue[:n] = self._queue[:n], []
        return batch

    def _run(self, batch: list[_Slot[T, R]]) -> None:
        """Flush `batch` (outside the lock) and record each slot's outcome."""
        try:
            results = list(self.flush([s.item for s in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"flush returned {len(results)} results for {len(batch)} items")
        except BaseException as e:  # noqa: B036 - every caller of the batch gets it, the leader raises it too
            results = [e] * len(batch)
        for slot, outcome in zip(batch, results):
            if isinstance(outcome, BaseException):
                slot.error = outcome
            else:
                slot.result = outcome
            slot.done = True

    @staticmethod
    def _outcome(slot: _Slot[T, R]) -> R:
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]


class SendGroup:
    """One process's direct sends, coalesced (see the module's docstring): `send` blocks until its batch is back."""

    def __init__(self, r: redis.Redis, keys: Keys, dispatcher: Dispatcher, budget: Callable[[], Budget],
                 key_ttl: float, wait: Optional[Sequence[Any]]) -> None:
        self.r, self.keys, self.dispatcher = r, keys, dispatcher
        self.budget, self.key_ttl, self.wait = budget, key_ttl, wait
        self._batches: Coalescer[Direct, Sent] = Coalescer(self._flush, size=lambda d: 10 + 4 * len(d.jobs))

    def send(self, direct: Direct) -> Sent:
        """Accept and dispatch `direct` with whatever else is sent meanwhile: its answer, its refusal raised
        (Overloaded, Conflict), or the batch's Unavailable. The batch goes on the dispatcher's connection; the
        caller's own (link_for) is given back first: callers waiting for a batch while holding the pool's
        connections would leave none for the leader's reads (the budget's), and wait for it for ever."""
        release_link(self.r)
        return self._batches.submit(direct)

    def _flush(self, sends: list[Direct]) -> list[Union[Sent, Exception]]:
        """One SEND_DISPATCH call per definitions version in the batch (one, but for a reload meanwhile)."""
        budget = self.budget()
        out: dict[int, Union[Sent, Exception]] = {}
        for version in dict.fromkeys(d.version for d in sends):
            group = [i for i, d in enumerate(sends) if d.version == version]
            answers = submit_directs(self.r, self.keys, self.dispatcher, [sends[i] for i in group], budget,
                                     self.key_ttl, self.wait)
            out.update(zip(group, answers))
        return [out[i] for i in range(len(sends))]

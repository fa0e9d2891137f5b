"""What wakes a worker's loop out of its selector besides its commands: a pipe the loop watches, written by a
thread that blocks on Redis for control requests (kill) and, while the loop wants work (worker.py `_listen`: a
free slot, and nothing started or ended for a moment), its queues' bells.

A BLPOP sent while the loop wanted no work watches the control list alone, and waits FULL_BLOCK, not BLOCK, so
the thread hears the bells soon after the loop wants work again. With a second for every BLPOP, a worker that
drained after a burst heard no bell until then: a message sent 20 ms after a burst of 40 waited 80-177 ms (p50)
and 712-739 ms (p90) from its dispatch to its claim; 1.1-1.2 ms (p50) and 2.3-15 ms (p90: at worst a FULL_BLOCK
in flight) with FULL_BLOCK and the loop's quiet rule, after bursts of 40 jobs or of 4,000 (2.5 s) alike
(bench/bench_after_burst.py; bench/README.md, thirteenth round).

A worker full of long commands sends one BLPOP over the control list a second (DEAF_FOR). When a slot frees and
the loop wants work while such a BLPOP is in flight, the loop cuts it short: it pushes POKE on its own control list,
which the thread takes and drops, and the thread's next BLPOP hears the bells. Without it a message sent just then
waited for the rest of that second: 224 ms (p50) and 517 ms (p90) from its dispatch to its claim with one worker of
one slot, 1.25 ms and 1.39 ms with the poke (bench_after_burst.py --long 2.5; bench/README.md, fourteenth round).
Poking every BLPOP without the bells instead of FULL_BLOCK took the after-burst p90 to 1.1-1.3 ms, but workers then
answered the bells at every quiet moment under load, in smaller claims: 0.97 of the API's jobs/s in 4 pairs of 4.

A bell the thread takes once the loop has no free slot (a claim filled it while the BLPOP was in flight) goes back
on its list, for another worker.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Sequence

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.store.connection import Redis, RedisError
from angora_rq.store.link import Link

BLOCK = 1.0  # seconds a BLPOP over the bells waits (an idle worker's: one a second)
FULL_BLOCK = 0.05  # seconds a BLPOP over the control list alone waits while the worker is busy: 20 a second
DEAF_FOR = 2.0  # seconds without a command started or ended after which such a BLPOP waits BLOCK again
POKE = "wake"  # pushed on a worker's own control list to end a long BLPOP without the bells (no verb of control)


def blpop_timeout(want: bool, busy_at: float, now: float) -> float:
    """How long the next BLPOP waits: BLOCK over the bells; FULL_BLOCK without them while a command started or
    ended in the last DEAF_FOR seconds (`busy_at`: a burst, whose end the worker must hear soon after), else BLOCK
    (a worker full of long commands sends one a second, not twenty)."""
    return BLOCK if want or now - busy_at >= DEAF_FOR else FULL_BLOCK


class Waker:
    """Worker `name`'s wake-ups: `control` holds the requests the thread received (`<verb> <execution id>`);
    `want_work` set means the loop wants work (a bell wakes it)."""

    def __init__(self, r: Redis, keys: Keys, name: str, queues: Sequence[str]) -> None:
        self.r = r
        self.control_key = keys.worker_control(name)
        self.bells = [keys.bell(q) for q in queues]
        self.control: deque[str] = deque()
        self.want_work = threading.Event()
        self.busy_at = time.monotonic()  # when a command last started or ended (as if at the start)
        self.free = True  # the loop has a free slot (a bell taken while it has none goes back)
        self.deaf = threading.Event()  # set while a BLPOP over the control list alone, BLOCK long, may be in flight
        self._quit = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)

    def fileno(self) -> int:
        """The end the loop's selector watches."""
        return self._read

    def drain(self) -> None:
        """Empty the pipe (the loop is awake now)."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        try:
            os.write(self._write, b"x")
        except OSError:  # full (BlockingIOError among them): the loop has wake-ups pending already
            pass

    def want(self, want: bool, busy_at: float, free: bool = True) -> None:
        """Whether the loop wants work (a free slot, and quiet): the thread's next BLPOP hears the bells; `busy_at`:
        when a command last started or ended (time.monotonic()); `free`: whether it has a free slot (woken by a
        bell, it claims even when not quiet)."""
        self.busy_at = busy_at
        self.free = free
        if not want:
            self.want_work.clear()
            return
        self.want_work.set()
        # After want_work is set: the thread sets `deaf` before it reads want_work, so either it sees want_work, or
        # its long BLPOP is seen here and poked.
        if self.deaf.is_set():
            self.deaf.clear()
            self._poke()

    def _poke(self) -> None:
        """End the thread's long BLPOP over the control list (one round trip, at most once a DEAF_FOR)."""
        try:
            self.r.rpush(self.control_key, POKE)
        except RedisError:
            pass  # Redis out of reach: the BLPOP ends within BLOCK all the same

    def start(self) -> None:
        threading.Thread(target=self._run, name="angora-waiter", daemon=True).start()

    def stop(self) -> None:
        self._quit.set()

    def _run(self) -> None:
        link = Link(self.r)  # this thread's own connection; each bell costs ~30 us of CPU instead of ~100
        while not self._quit.is_set():
            try:
                self.deaf.set()  # before want_work is read: see want()
                want = self.want_work.is_set()
                timeout = blpop_timeout(want, self.busy_at, time.monotonic())
                if want or timeout < BLOCK:
                    self.deaf.clear()
                watch = [self.control_key] + (self.bells if want else [])
                got = link.call("BLPOP", *watch, timeout)
            except RedisError:
                time.sleep(0.5)
                continue
            finally:
                self.deaf.clear()
            if got:
                key, value = (to_str(got[0]), to_str(got[1]))
                if key == self.control_key:
                    if value == POKE:
                        continue  # the loop wants work: the next BLPOP hears the bells
                    self.control.append(value)
                elif not self.free:
                    self._ring_again(link, key, value)
                    continue
                self.wake()

    def _ring_again(self, link: Link, bell: str, value: str) -> None:
        """Put back a bell taken by a BLPOP sent while the loop wanted work, whose slots a claim filled meanwhile:
        another worker's BLPOP takes it. Kept, it would leave the message it rang for to the
        next worker whose loop claims for another reason (a second at worst)."""
        try:
            link.call("LPUSH", bell, value)
        except RedisError:
            pass  # the message waits in its queue for the next claim, as after a lost bell

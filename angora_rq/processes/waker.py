"""What wakes a worker's loop out of its selector besides its commands: a pipe the loop watches, written by a
thread that blocks on Redis for control requests (kill) and, while the loop wants work (worker.py `_listen`: a
free slot, and nothing started or ended for a moment), its queues' bells.

A BLPOP sent while the loop wanted no work watches the control list alone, and waits FULL_BLOCK, not BLOCK, so
the thread hears the bells soon after the loop wants work again. With a second for every BLPOP, a worker that
drained after a burst heard no bell until then: a message sent 20 ms after a burst of 40 waited 80-177 ms (p50)
and 712-739 ms (p90) from its dispatch to its claim, and 0.9-1.1 ms (p50) and 1.5-2.3 ms (p90) with FULL_BLOCK and
the loop's quiet rule (bench/bench_after_burst.py; bench/README.md, thirteenth round).
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
FULL_BLOCK = 0.05  # seconds a BLPOP over the control list alone waits: 20 a second while the loop is busy


class Waker:
    """Worker `name`'s wake-ups: `control` holds the requests the thread received (`<verb> <execution id>`);
    `want_work` set means the loop has free slots (a bell wakes it)."""

    def __init__(self, r: Redis, keys: Keys, name: str, queues: Sequence[str]) -> None:
        self.r = r
        self.control_key = keys.worker_control(name)
        self.bells = [keys.bell(q) for q in queues]
        self.control: deque[str] = deque()
        self.want_work = threading.Event()
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

    def start(self) -> None:
        threading.Thread(target=self._run, name="angora-waiter", daemon=True).start()

    def stop(self) -> None:
        self._quit.set()

    def _run(self) -> None:
        link = Link(self.r)  # this thread's own connection; each bell costs ~30 us of CPU instead of ~100
        while not self._quit.is_set():
            try:
                want = self.want_work.is_set()
                watch = [self.control_key] + (self.bells if want else [])
                got = link.call("BLPOP", *watch, BLOCK if want else FULL_BLOCK)
            except RedisError:
                time.sleep(0.5)
                continue
            if got:
                key, value = (to_str(got[0]), to_str(got[1]))
                if key == self.control_key:
                    self.control.append(value)
                self.wake()

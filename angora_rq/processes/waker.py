"""What wakes a worker's loop out of its selector besides its commands: a pipe the loop watches, written by a
thread that blocks on Redis for control requests (kill) and, while the loop has free slots, its queues' bells."""
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
                watch = [self.control_key] + (self.bells if self.want_work.is_set() else [])
                got = link.call("BLPOP", *watch, 1)
            except RedisError:
                time.sleep(0.5)
                continue
            if got:
                key, value = (to_str(got[0]), to_str(got[1]))
                if key == self.control_key:
                    self.control.append(value)
                self.wake()

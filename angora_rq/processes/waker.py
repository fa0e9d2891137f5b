"""What wakes a worker's loop out of its selector besides its commands: a pipe (`wake()`, from a signal handler),
and one BLPOP at a time on a connection of its own, over the worker's control requests (kill) and, while the loop
has free slots, its queues' bells.

The loop reads the BLPOP's answer itself, from the same selector that waits on its commands. A thread that blocked
on the BLPOP and woke the loop through the pipe cost a thread hop between a bell and the claim it calls for: 157 us
(p50) of the 1.53 ms from a root message's dispatch to its command's claim, measured on an idle system
(bench/README.md, thirteenth round).
"""
from __future__ import annotations

import os
import selectors
import time
from collections import deque
from typing import Optional, Sequence

from angora_rq.core.codec import to_str
from angora_rq.core.keys import Keys
from angora_rq.store.connection import Redis, RedisError
from angora_rq.store.link import LOST, Link

BLOCK = 1  # seconds a BLPOP waits: the longest a worker that became free waits before it watches the bells again
RETRY = 0.5  # seconds before a BLPOP is sent again after one failed


class Waker:
    """Worker `name`'s wake-ups, registered in the loop's selector `sel`: the pipe with data None, the BLPOP's
    socket (while one is in flight) with data `self`. `control` holds the requests received (`<verb> <execution
    id>`)."""

    def __init__(self, r: Redis, keys: Keys, name: str, queues: Sequence[str], sel: selectors.BaseSelector) -> None:
        self.control_key = keys.worker_control(name)
        self.bells = [keys.bell(q) for q in queues]
        self.control: deque[str] = deque()
        self._sel = sel
        self._link = Link(r)  # its own connection: a BLPOP holds it
        self._fd: Optional[int] = None  # the socket of the BLPOP in flight, registered in `sel`
        self._retry_at = 0.0  # time.monotonic() before which no BLPOP is sent (the last one failed)
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        sel.register(self._read, selectors.EVENT_READ, None)

    def arm(self, want_work: bool) -> None:
        """Before the loop waits: a BLPOP in flight over the control requests, and the bells when `want_work`.

        One in flight already stays, whatever it watches: a worker that became free meanwhile hears the bells once
        it returns (within BLOCK); its claims after each record and each step find queued work meanwhile."""
        if self._fd is not None or time.monotonic() < self._retry_at:
            return
        watch = [self.control_key, *(self.bells if want_work else ())]
        try:
            fd = self._link.send("BLPOP", *watch, BLOCK)
        except (RedisError, *LOST):
            self._retry_at = time.monotonic() + RETRY
            return
        self._sel.register(fd, selectors.EVENT_READ, self)
        self._fd = fd

    def answer(self) -> bool:
        """Read the BLPOP's answer (its socket is readable) and keep a control request; False when it timed out
        or failed (nothing arrived)."""
        self._disarm()
        try:
            got = self._link.reply()
        except (RedisError, *LOST):
            self._link.abandon()
            self._retry_at = time.monotonic() + RETRY
            return False
        if not got:
            return False
        key, value = to_str(got[0]), to_str(got[1])
        if key == self.control_key:
            self.control.append(value)
        return True

    def drain(self) -> None:
        """Empty the pipe (the loop is awake now)."""
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        """Wake the loop (safe in a signal handler)."""
        try:
            os.write(self._write, b"x")
        except OSError:  # full (BlockingIOError among them): the loop has wake-ups pending already
            pass

    def stop(self) -> None:
        """Drop the BLPOP in flight with its connection."""
        self._disarm()
        self._link.abandon()

    def _disarm(self) -> None:
        if self._fd is not None:
            try:
                self._sel.unregister(self._fd)
            except (KeyError, ValueError):
                pass
            self._fd = None

"""store/sendgroup.Coalescer: one flush at a time, each over everything queued meanwhile; each caller gets its own
result or exception. Plain threads, no Redis (the batches' Redis side: test_send_dispatch.py)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Union

import pytest

from angora_rq.store.sendgroup import Coalescer


class Flushes:
    """A flush that records its batches; the first one blocks until `release` (so that callers queue behind it)."""

    def __init__(self, answer: Callable[[str], Union[str, BaseException]] = str.upper) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.answer = answer

    def __call__(self, items: list[str]) -> list[Union[str, BaseException]]:
        self.batches.append(items)
        if len(self.batches) == 1:
            self.started.set()
            assert self.release.wait(30)
        return [self.answer(x) for x in items]


def call_in_thread(c: Coalescer[str, str], item: str, out: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            out[item] = c.submit(item)
        except Exception as e:  # noqa: BLE001 - what the caller got
            out[item] = e
    t = threading.Thread(target=run)
    t.start()
    return t


def queued(c: Coalescer[str, str], n: int) -> None:
    """Wait (bounded) until n callers wait behind the flush in flight."""
    deadline = time.monotonic() + 30
    while len(c._queue) < n:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def behind_a_flush(c: Coalescer[str, str], flush: Flushes, items: list[str]) -> dict[str, Any]:
    """What each caller got: "a" first, whose flush waits until `items` have queued behind it, in their order."""
    out: dict[str, Any] = {}
    threads = [call_in_thread(c, "a", out)]
    assert flush.started.wait(30)
    for item in items:
        threads.append(call_in_thread(c, item, out))
        queued(c, len(threads) - 1)
    flush.release.set()
    for t in threads:
        t.join(30)
    return out


def test_a_lone_call_flushes_at_once_alone() -> None:
    flush = Flushes()
    flush.release.set()
    c: Coalescer[str, str] = Coalescer(flush)
    assert c.submit("a") == "A" and c.submit("b") == "B"
    assert flush.batches == [["a"], ["b"]]


def test_calls_made_during_a_flush_go_together_in_the_next_each_with_its_own_answer() -> None:
    flush = Flushes(lambda x: ValueError(x) if x == "c" else x.upper())
    out = behind_a_flush(Coalescer(flush), flush, ["b", "c", "d"])
    assert flush.batches == [["a"], ["b", "c", "d"]]
    assert (out["a"], out["b"], out["d"]) == ("A", "B", "D")
    assert isinstance(out["c"], ValueError) and str(out["c"]) == "c"


def test_a_flush_that_raises_fails_every_call_of_its_batch_only() -> None:
    flush = Flushes()
    calls = [0]

    def failing(items: list[str]) -> list[Union[str, BaseException]]:
        calls[0] += 1
        if calls[0] == 2:
            raise ConnectionError("redis went away")
        return flush(items)
    c: Coalescer[str, str] = Coalescer(failing)
    out = behind_a_flush(c, flush, ["b", "c"])
    assert out["a"] == "A" and isinstance(out["b"], ConnectionError) and out["c"] is out["b"]
    assert c.submit("d") == "D"  # the next batch goes as usual


def test_a_batch_stays_within_its_cap_and_its_budget() -> None:
    flush = Flushes()
    out = behind_a_flush(Coalescer(flush, cap=3, size=len, budget=6), flush, ["b", "c", "d", "e", "ffff", "ggggggggg"])
    # 3 at most; then e (1) + ffff (4) = 5 <= 6, + 9 is over: alone, as any single item over the budget.
    assert flush.batches == [["a"], ["b", "c", "d"], ["e", "ffff"], ["ggggggggg"]]
    assert out["ggggggggg"] == "GGGGGGGGG"


def test_a_wrong_number_of_results_is_an_error_for_the_batch() -> None:
    c: Coalescer[str, str] = Coalescer(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        c.submit("a")

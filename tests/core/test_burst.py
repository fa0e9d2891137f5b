"""core.pressure.Burst: when /send leaves its messages to the matchers' batches."""
from __future__ import annotations

from angora_rq.core.pressure import Burst


def test_a_burst_is_more_sends_than_its_count_within_its_window() -> None:
    b = Burst(count=3, window=0.01)
    assert [b.note(t) for t in (0.0, 0.001, 0.002)] == [False, False, False]  # not yet `count` before it
    assert b.note(0.003)  # the 3 before it fit in 10 ms
    assert not b.note(0.5)  # a pause: the 3 before it span 0.498 s
    assert [b.note(t) for t in (1.0, 1.02, 1.04, 1.06)] == [False, False, False, False]  # a steady 50/s


def test_a_burst_holds_for_a_while_after_its_last_dense_send() -> None:
    b = Burst(count=3, window=0.01, hold=0.05)
    assert [b.note(t) for t in (0.0, 0.001, 0.002, 0.003)] == [False, False, False, True]
    # Sends a little sparser than the window (the 3 before each span 10.5 ms): still the burst, for `hold` after
    # the last send that was dense
    assert [b.note(0.003 + 0.0035 * i) for i in range(1, 5)] == [True, True, True, True]
    assert not b.note(0.2)  # well after the hold: dispatched at once again
    assert [b.note(t) for t in (1.0, 1.02, 1.04, 1.06)] == [False, False, False, False]  # a steady 50/s never was

"""How the UI writes a duration (the `duration` template filter; angora.js writes the same, tests/browser)."""
from __future__ import annotations

import pytest

from angora_rq.web.ui import duration

CASES = [
    (None, "\u2013"), ("", "\u2013"), (0, "0 s"), (0.0004, "0.4 ms"), (0.0032, "3.2 ms"), (0.0099, "9.9 ms"),
    (0.012, "12 ms"), (0.4567, "457 ms"), (0.9994, "999 ms"), (0.9996, "1.00 s"), (1, "1.00 s"), (1.254, "1.25 s"),
    (12.34, "12.3 s"), (245, "4 m 05 s"), (7380, "2 h 03 m"),
]


@pytest.mark.parametrize(("seconds", "text"), CASES)
def test_a_duration_reads_in_the_unit_that_shows_it(seconds: object, text: str) -> None:
    assert duration(seconds) == text


def test_commands_of_a_few_milliseconds_no_longer_read_zero() -> None:
    """A trivial command's 2-5 ms read `0.00 s` on every page, and a chart's axis read `0.00 s` twice."""
    assert len({duration(s) for s in (0.002, 0.003, 0.004, 0.005)}) == 4

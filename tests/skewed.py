"""Run the `angora` CLI with a wrong wall clock: `python tests/skewed.py SECONDS ROLE ARGS...`.

time.time() (and time.time_ns()) return the real time plus SECONDS (negative: slow), as on a host whose clock is
off; time.monotonic() is left alone, as it is on such a host. For the clock tests and the multi-host harness only.
"""
from __future__ import annotations

import sys
import time


def skew(seconds: float) -> None:
    """Make this process's wall clock `seconds` fast (or slow, when negative)."""
    real, real_ns = time.time, time.time_ns
    time.time = lambda: real() + seconds  # type: ignore[assignment]
    time.time_ns = lambda: real_ns() + int(seconds * 1e9)  # type: ignore[assignment]


if __name__ == "__main__":
    skew(float(sys.argv[1]))
    from angora_rq.cli import main

    sys.argv = ["angora", *sys.argv[2:]]
    main(prog_name="angora")

"""Crash safety: a matcher SIGKILLed while messages flow loses nothing and dispatches nothing twice.

A control run with the naive matcher (tests/naive_matcher.py: dispatch, then acknowledge separately; no dedupe)
must show duplicates under the same kills, which proves the test can see them.
"""
from __future__ import annotations

import collections
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from angora_rq.store.bus import send
from angora_rq.core.messages import Message
from angora_testkit import System, wait_for, write_config

JOBS = """
- name: record
  triggers: [crash.test]
  command: ["sh", "-c", "echo $ANGORA_RUN_ID >> {out}"]
  replay: 0
"""
NAIVE_MATCHER = [sys.executable, str(Path(__file__).parents[1] / "naive_matcher.py")]


def run_with_matcher_kills(angora_env: dict[str, str], tmp_path: Path, n: int, kills: int,
                           unsafe: bool) -> collections.Counter:
    """Send n messages while SIGKILLing the matcher `kills` times; return how often each run's command ran."""
    out = tmp_path / "ran.txt"
    cfg = write_config(tmp_path / "config", JOBS.replace("{out}", str(out)))
    s = System(dict(angora_env, ANGORA_CLAIM_IDLE="1"), cfg, tmp_path)

    def start_matcher() -> subprocess.Popen:
        return s.start_argv("matcher", NAIVE_MATCHER) if unsafe else s.start("matcher")

    try:
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        matcher = start_matcher()
        run_ids: list[str] = []
        sender = threading.Thread(target=lambda: run_ids.extend(_send_all(s, n)))
        sender.start()
        for _ in range(kills):
            wait_for(lambda: _group_exists(s), 30, what="the consumer group")
            time.sleep(0.4)  # the matcher's working time before the kill: any moment will do, no event to wait for
            matcher.send_signal(signal.SIGKILL)
            matcher.wait()
            matcher = start_matcher()
        sender.join()
        assert len(run_ids) == n
        wait_for(lambda: _count(out) >= n and _settled(s, run_ids), 180, interval=0.5,
                 what=f"all {n} messages to run ({_count(out)} so far)")
        return collections.Counter(out.read_text().split())
    finally:
        s.stop()


def _send_all(s: System, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        msg = Message.create("crash.test", origin="test")
        send(s.r, s.keys, msg)
        ids.append(msg.run_id)
    return ids


def _group_exists(s: System) -> bool:
    try:
        return bool(s.r.xinfo_groups(s.keys.stream()))
    except redis.exceptions.ResponseError:
        return False  # the stream does not exist yet


def _count(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _settled(s: System, run_ids: list[str]) -> bool:  # noqa: ARG001
    """No message pending in the stream and no execution queued or running: every dispatch (a duplicate too) has
    run to its end, so the commands' output is final."""
    pending = s.r.xpending(s.keys.stream(), "matchers")["pending"]
    return pending == 0 and s.r.llen(s.keys.rq_queue("default")) == 0 and s.r.zcard(s.keys.rq_started("default")) == 0


@pytest.mark.parametrize("n", [5000])
def test_matcher_sigkilled_five_times_loses_nothing_and_runs_nothing_twice(
        angora_env: dict[str, str], tmp_path: Path, n: int) -> None:
    runs = run_with_matcher_kills(angora_env, tmp_path, n=n, kills=5, unsafe=False)
    dupes = {k: v for k, v in runs.items() if v > 1}
    assert not dupes, f"{len(dupes)} runs ran more than once"
    assert len(runs) == n


def test_control_without_dedupe_shows_duplicates(angora_env: dict[str, str], tmp_path: Path) -> None:
    runs = run_with_matcher_kills(angora_env, tmp_path, n=5000, kills=5, unsafe=True)
    assert len(runs) == 5000, "the naive matcher must not lose messages either (it acknowledges last)"
    assert any(v > 1 for v in runs.values()), "the kills should have caught the naive matcher between steps"


# -- chaos (long: ./scripts/test -m chaos) --------------------------------------------------------------------
CHAOS_JOBS = """
- name: record
  triggers: [crash.test]
  command: ["sh", "-c", "sleep 0.01; echo $ANGORA_RUN_ID >> {out}"]
"""


@pytest.mark.chaos
def test_chaos_two_matchers_and_workers_killed_under_load(angora_env: dict[str, str], tmp_path: Path) -> None:
    """20,000 messages; two matchers and two workers, one of each SIGKILLed and restarted every ~0.7 s.

    Matchers: every message dispatched exactly once. Workers: a killed worker's commands are ended by its guardian
    and replayed (replay unlimited here), so every run's command completes at least once; a second completion can
    only be a command that finished in the instant before its worker died unrecorded, so those stay rare.
    """
    n, rounds = 20_000, 20
    out = tmp_path / "ran.txt"
    cfg = write_config(tmp_path / "config", CHAOS_JOBS.replace("{out}", str(out)))
    s = System(dict(angora_env, ANGORA_CLAIM_IDLE="1", ANGORA_REPLAY_MAX_DELAY="1"), cfg, tmp_path)
    try:
        workers = [s.start("worker", "-c", "8") for _ in range(2)]
        matchers = [s.start("matcher") for _ in range(2)]
        run_ids: list[str] = []
        sender = threading.Thread(target=lambda: run_ids.extend(_send_all(s, n)))
        sender.start()
        for i in range(rounds):
            time.sleep(0.7)
            group, k = (matchers, "matcher") if i % 2 == 0 else (workers, "worker")
            victim = group.pop(0)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            group.append(s.start(k, *(("-c", "8") if k == "worker" else ())))
        sender.join()
        wait_for(lambda: _settled(s, run_ids) and len(set(out.read_text().split())) >= n, 300, interval=1.0,
                 what=f"all {n} runs to complete ({_count(out)} lines so far)")
        ran = collections.Counter(out.read_text().split())
        assert set(ran) == set(run_ids), f"{len(set(run_ids) - set(ran))} runs never completed"
        dispatched: collections.Counter[tuple[str, int]] = collections.Counter()
        for rid in run_ids[:2000]:  # executions per run: 1, or more only through 'worker lost' replays
            for ex in s.executions(rid):
                dispatched[(rid, ex["attempt"])] += 1
        assert all(v == 1 for v in dispatched.values()), "an attempt was dispatched twice"
        twice = sum(1 for v in ran.values() if v > 1)
        assert twice <= rounds // 2 * 16, f"{twice} runs completed twice: more than the killed workers held"
    finally:
        s.stop()

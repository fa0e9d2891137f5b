"""A host whose clock is 30 s fast or slow: no lease stolen, no tick early, no replay early, no live work replayed.

Processes run through tests/skewed.py, which shifts their wall clock (time.time) as a host's would be shifted.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.model import Config, ScheduleDef
from angora_rq.core.schema import Exec, Run
from angora_rq.core.settings import Settings
from angora_rq.core.ticks import from_ms
from angora_rq.processes.scheduler import Scheduler
from angora_testkit import System, hash_as, wait_for, write_config

SKEWED = [sys.executable, str(Path(__file__).parents[1] / "skewed.py")]
SKEWS = [30.0, -30.0]


def now_of(r: redis.Redis) -> float:
    """Redis' clock."""
    seconds, micros = r.time()
    return seconds + micros / 1e6


def skewed(s: System, seconds: float, role: str, *args: str) -> None:
    """Start `angora ROLE ARGS` with its wall clock `seconds` off."""
    s.start_argv(f"{role}{'+' if seconds >= 0 else ''}{seconds:g}s", [*SKEWED, str(seconds), role, *args])


def runs_of(r: redis.Redis, keys: Keys, origin: str) -> list[dict[str, str]]:
    """Every run started by `origin`."""
    out = []
    for rid in r.zrange(keys.runs(), 0, -1):
        h = hash_as(r, keys.run(rid.decode()), Run)
        if h.get("origin") == origin:
            out.append(h)
    return out


# -- schedules -----------------------------------------------------------------------------------------------

def test_a_tick_later_than_redis_clock_is_not_sent(r: redis.Redis, keys: Keys) -> None:
    s = ScheduleDef(name="beat", message="beat.go", every=1.0)
    sched = Scheduler(r, keys, Settings(), lambda: Config(jobs=(), schedules=(s,)), name="fast")
    fast = now_of(r) + 60  # a `now` a minute ahead of Redis, as a fast host would read it
    sched.step(fast)  # first sight of the schedule: its baseline
    assert sched.step(fast + 2.5) == 0
    assert runs_of(r, keys, "schedule:beat") == []
    assert sched.send_tick(s, from_ms(int((now_of(r) + 30) * 1000) // 1000 * 1000), fast)[0] == "early"


SCHEDULE = """
- schedule: beat
  every: 1s
  message: beat.go
  catchup: once
"""


@pytest.mark.parametrize("skew", SKEWS)
def test_a_skewed_scheduler_sends_each_tick_on_time_and_steals_no_lease(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys, skew: float) -> None:
    s = System(angora_env, write_config(tmp_path / "config", SCHEDULE), tmp_path)
    try:
        s.start("scheduler", "--name", "honest")
        wait_for(lambda: r.get(keys.scheduler_lease()), 20, what=f"a leader ({s.logs()})")
        skewed(s, skew, "scheduler", "--name", "skewed")
        wait_for(lambda: len(runs_of(r, keys, "schedule:beat")) >= 4, 30, what=f"4 ticks ({s.logs()})")
        assert r.get(keys.scheduler_lease()).decode().startswith("honest ")  # never taken over
        assert int(r.get(keys.scheduler_fence())) == 1
        s.procs["scheduler1"].terminate()  # the honest one resigns: the skewed one leads from here
        wait_for(lambda: (r.get(keys.scheduler_lease()) or b"").startswith(b"skewed "), 20,
                 what=f"the takeover ({s.logs()})")
        n = len(runs_of(r, keys, "schedule:beat"))
        early: set[int] = set()

        def more_ticks() -> bool:
            seen = runs_of(r, keys, "schedule:beat")  # read before Redis' time: a tick seen is already sent
            early.update(int(h["tick"]) for h in seen if int(h["tick"]) > now_of(r) * 1000)
            return len(seen) >= n + 3

        wait_for(more_ticks, 30, what=f"3 more ticks ({s.logs()})")
        assert not early, f"ticks sent before their time by Redis' clock: {sorted(early)}"
        runs = runs_of(r, keys, "schedule:beat")
        ticks = sorted(int(h["tick"]) for h in runs)
        assert len(ticks) == len(set(ticks)), "a tick was sent twice"
        # Sent at or after its time by Redis' clock, never 30 s early; and not 30 s late either (a loaded machine
        # may be a few seconds late: the bound only has to tell a 30 s skew).
        assert all(float(h["created"]) * 1000 >= int(h["tick"]) for h in runs), runs
        assert all(float(h["created"]) * 1000 - int(h["tick"]) < 20000 for h in runs), runs
        covered = sorted(t - 1000 * i for h in runs for t in [int(h["tick"])] for i in range(int(h["covers"])))
        assert covered == list(range(covered[0], covered[-1] + 1000, 1000)), "a tick was lost"
    finally:
        s.stop()


# -- workers -------------------------------------------------------------------------------------------------

LONG_AND_FAILING = """
- name: long
  triggers: [clock.long]
  command: [sleep, "8"]
- name: failing
  triggers: [clock.fail]
  command: "false"
  replay: 1
  replay_delay: 20
"""


def test_skewed_workers_replay_no_live_work_and_no_replay_early(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    s = System(angora_env, write_config(tmp_path / "config", LONG_AND_FAILING), tmp_path)
    try:
        s.start("matcher")
        s.start("worker", "--name", "honest", "-c", "1")
        for skew, name in zip(SKEWS, ("fast", "slow")):  # one run covers both skews: the 8 s command is the cost
            skewed(s, skew, "worker", "--name", name, "-c", "1")
        # One long command on each (-c 1); each worker's janitor watches the others' for longer than a TTL.
        runs = [s.send("clock.long") for _ in range(3)]
        for rid in runs:
            done = s.wait_run(rid, 60)
            assert done["status"] == "succeeded", done
        execs = [x for rid in runs for x in s.executions(rid)]
        assert sorted(x["worker"] for x in execs) == ["fast", "honest", "slow"]
        assert [x["attempt"] for x in execs] == [1, 1, 1], "live work was replayed"
    finally:
        s.stop()


@pytest.mark.parametrize("skew", SKEWS)
def test_a_replay_is_due_by_redis_clock_whoever_failed_and_whoever_promotes(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys, skew: float) -> None:
    s = System(angora_env, write_config(tmp_path / "config", LONG_AND_FAILING), tmp_path)
    try:
        s.start("matcher")
        skewed(s, skew, "worker", "--name", "skewed")
        rid = s.send("clock.fail")
        first = wait_for(lambda: [x for x in s.executions(rid) if x["status"] == "replaying"], 30,
                         what=f"the first attempt to fail ({s.logs()})")[0]
        replay = s.q.execution(first["next"])
        assert replay["status"] == "delayed"
        wait = float(r.hget(keys.execution(replay["id"]), Exec.delay_until)) - now_of(r)
        assert 0 < wait <= 20, f"due in {wait:.1f}s by Redis' clock; the job says 20 s (a 30 s skew shows)"
        s.start("worker", "--name", "honest")  # its janitor, and the skewed one's, look at it for a while
        time.sleep(3)
        assert s.q.execution(replay["id"])["status"] == "delayed", "promoted early"
    finally:
        s.stop()


GATE = """
- name: gated
  triggers: [clock.gate]
  command: "true"
  approval: true
  approval_timeout: 20s
"""


@pytest.mark.parametrize("skew", SKEWS)
def test_an_approval_deadline_is_by_redis_clock_whoever_creates_and_whoever_expires_it(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys, skew: float) -> None:
    s = System(angora_env, write_config(tmp_path / "config", GATE), tmp_path)
    try:
        skewed(s, -skew, "matcher")  # it sets the deadline; a fast or slow janitor looks at it
        skewed(s, skew, "worker", "--name", "skewed")
        rid = s.send("clock.gate")
        gated = wait_for(lambda: [x for x in s.executions(rid) if x["status"] == "awaiting_approval"], 30,
                         what=f"the gate ({s.logs()})")[0]
        left = float(r.hget(keys.execution(gated["id"]), Exec.approval_deadline)) - now_of(r)
        assert 0 < left <= 20, f"decided in {left:.1f}s by Redis' clock; the job says 20 s (a 30 s skew shows)"
        time.sleep(3)  # the skewed worker's janitor passes every second
        assert s.q.execution(gated["id"])["status"] == "awaiting_approval", "decided early"
    finally:
        s.stop()

"""Schedules: tick arithmetic (pure, property tests), the leader lease and fenced sends (real Redis),
and two `angora scheduler` processes end to end (each tick sent once; kill -9 of the leader)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import redis
from croniter import croniter
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from angora_rq.store.bus import send as bus_send
from angora_rq.core.schema import Run
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, ScheduleDef
from angora_rq.processes.scheduler import Scheduler
from angora_rq.store.schedules import leader_status, schedule_status
from angora_rq.core.settings import Settings
from angora_rq.core.ticks import (GRACE, US, baseline, due_ticks, from_ms, from_ts, missed_count, next_fire, prev_fire,
                             to_ms)
from angora_testkit import fields

UTC = timezone.utc
CRONS = ["* * * * *", "*/5 * * * *", "0 * * * *", "30 1 * * *", "0 9 * * 1-5", "15,45 */2 * * *", "0 0 1 * *",
         "0 2 * * 0", "59 23 31 12 *", "* * * * * */15", "0 3 29 2 *"]
ZONES = ["UTC", "America/New_York", "Europe/Paris", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo"]
# Instants near DST changes, where cron arithmetic usually breaks.
DST_EDGES = [datetime(2024, 11, 3, 5, 0, tzinfo=UTC), datetime(2024, 3, 10, 6, 30, tzinfo=UTC),
             datetime(2024, 10, 27, 0, 30, tzinfo=UTC), datetime(2024, 3, 31, 0, 30, tzinfo=UTC),
             datetime(2024, 4, 6, 14, 45, tzinfo=UTC), datetime(2024, 10, 5, 15, 15, tzinfo=UTC)]
PURE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

instants = st.one_of(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.builds(lambda base, s: base + timedelta(microseconds=s), st.sampled_from(DST_EDGES),
              st.integers(-3 * 3600 * 10**6, 3 * 3600 * 10**6)),
)
every_s = st.one_of(st.integers(1, 86_400 * 2).map(float), st.integers(50, 5000).map(lambda ms: ms / 1000))
cron_schedules = st.builds(lambda c, z, k: ScheduleDef("s", "m", cron=c, timezone=z, catchup=k),
                           st.sampled_from(CRONS), st.sampled_from(ZONES), st.sampled_from(["skip", "once"]))
every_schedules = st.builds(lambda e, k: ScheduleDef("s", "m", every=e, catchup=k), every_s,
                            st.sampled_from(["skip", "once"]))
schedules = st.one_of(cron_schedules, every_schedules)


def is_tick(s: ScheduleDef, t: datetime) -> bool:
    """Independent check that `t` is a tick of `s`."""
    if s.every is not None:
        return to_ms(t) * 1000 % round(s.every * 1_000_000) == 0
    return t.microsecond == 0 and croniter.match(s.cron, t.astimezone(ZoneInfo(s.timezone)))


# -- next_fire / prev_fire ---------------------------------------------------------------------------------

@PURE
@given(schedules, instants)
@example(ScheduleDef("s", "m", cron="30 1 * * *", timezone="America/New_York"),
         datetime(2024, 11, 3, 5, 29, tzinfo=UTC))
@example(ScheduleDef("s", "m", cron="30 2 * * *", timezone="America/New_York"), datetime(2024, 3, 10, 6, 0, tzinfo=UTC))
def test_next_fire_is_the_first_tick_after(s: ScheduleDef, after: datetime) -> None:
    nxt = next_fire(s, after)
    assert nxt > after
    assert nxt.tzinfo is not None and nxt.utcoffset() == timedelta(0)
    assert is_tick(s, nxt)
    assert prev_fire(s, nxt) == nxt
    assert prev_fire(s, nxt - US) <= after  # no tick in between


@PURE
@given(schedules, instants)
def test_prev_fire_is_the_last_tick_at_or_before(s: ScheduleDef, at: datetime) -> None:
    prev = prev_fire(s, at)
    assert prev <= at
    assert is_tick(s, prev)
    assert next_fire(s, prev) > at


@PURE
@given(st.integers(1, 86_400), instants)
def test_every_is_aligned_to_the_epoch(every: int, after: datetime) -> None:
    nxt = next_fire(ScheduleDef("s", "m", every=float(every)), after)
    assert int(nxt.timestamp()) % every == 0 and nxt.microsecond == 0


def test_cron_reads_the_schedules_timezone() -> None:
    s = ScheduleDef("s", "m", cron="0 9 * * *", timezone="Europe/Paris")
    winter = next_fire(s, datetime(2024, 1, 10, 0, 0, tzinfo=UTC))
    summer = next_fire(s, datetime(2024, 7, 10, 0, 0, tzinfo=UTC))
    assert (winter.hour, summer.hour) == (8, 7)  # 09:00 CET / CEST in UTC


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError):
        next_fire(ScheduleDef("s", "m", every=1.0), datetime(2024, 1, 1))


@given(instants)
def test_ms_round_trip(t: datetime) -> None:
    assert to_ms(from_ms(to_ms(t))) == to_ms(t)
    assert from_ms(to_ms(t)) <= t < from_ms(to_ms(t)) + timedelta(milliseconds=1)


# -- due_ticks ---------------------------------------------------------------------------------------------

@PURE
@given(schedules, instants, st.floats(0, 3 * 86_400))
def test_due_ticks_are_new_ordered_and_catch_up_once(s: ScheduleDef, last_at: datetime, gap: float) -> None:
    last = prev_fire(s, last_at)
    now = last_at + timedelta(seconds=gap)
    due = due_ticks(s, last, now)
    horizon = now - timedelta(seconds=GRACE)
    assert due == sorted(set(due))
    assert all(last < t <= now and is_tick(s, t) for t in due)
    late = [t for t in due if t <= horizon]
    if s.catchup == "skip":
        assert late == []
    else:
        assert len(late) <= 1 and (not late or late[0] == due[0])
        missed = missed_count(s, last, horizon, limit=1) > 0
        assert bool(late) == missed
    if due:
        assert due[-1] == prev_fire(s, now)  # the latest tick is always among them when on time


def test_never_seen_schedule_starts_from_now() -> None:
    s = ScheduleDef("s", "m", every=1.0, catchup="once")
    now = datetime(2024, 5, 5, 12, 0, 0, 500000, tzinfo=UTC)
    assert due_ticks(s, None, now) == []
    assert baseline(s, now) == datetime(2024, 5, 5, 12, 0, 0, tzinfo=UTC)


def test_catch_up_once_after_an_outage() -> None:
    s = ScheduleDef("s", "m", every=60.0, catchup="once")
    last = datetime(2024, 5, 5, 12, 0, tzinfo=UTC)
    now = datetime(2024, 5, 5, 13, 0, 2, tzinfo=UTC)
    assert due_ticks(s, last, now) == [datetime(2024, 5, 5, 12, 59, tzinfo=UTC),
                                       datetime(2024, 5, 5, 13, 0, tzinfo=UTC)]
    assert due_ticks(s.__class__("s", "m", every=60.0), last, now) == [datetime(2024, 5, 5, 13, 0, tzinfo=UTC)]
    assert missed_count(s, last, datetime(2024, 5, 5, 12, 59, tzinfo=UTC)) == 59


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(every_schedules.filter(lambda s: (s.every or 0) >= 0.1), cron_schedules), instants,
       st.lists(st.one_of(st.floats(0.01, GRACE * 0.99), st.floats(GRACE, 4 * 86_400)), min_size=1, max_size=40))
def test_a_scheduler_loop_never_doubles_and_loses_only_what_skip_allows(
        s: ScheduleDef, start: datetime, gaps: list[float]) -> None:
    assume(s.every is None or s.every >= 0.1)
    last = baseline(s, start)
    now, sent = start, []
    for gap in gaps:
        prev_now, now = now, now + timedelta(seconds=gap)
        before = last
        due = due_ticks(s, last, now)
        sent += due
        last = due[-1] if due else last
        if s.catchup == "once":
            # everything up to now is accounted for: sent, or stood for by the one catch-up message
            assert last == prev_fire(s, now)
        if gap < GRACE and before >= prev_fire(s, prev_now):
            # a loop that keeps up sends every tick, one message each
            expected = []
            t = next_fire(s, before)
            while t <= now:
                expected.append(t)
                t = next_fire(s, t)
            assert due == expected
    assert sent == sorted(set(sent))  # no tick twice, in order


# -- the lease and fenced sends (real Redis) ---------------------------------------------------------------

T0 = 1_700_000_000.0  # a whole second: ticks of `every: 1s` fall on whole seconds


def scheduler(r: redis.Redis, keys: Keys, *schedules: ScheduleDef, name: str = "a", **kw: object) -> Scheduler:
    config = Config(jobs=(), schedules=tuple(schedules))
    settings = kw.pop("settings", Settings())
    return Scheduler(r, keys, settings, lambda: config, name=name, **kw)  # type: ignore[arg-type]


def runs_of(r: redis.Redis, keys: Keys, origin: str) -> list[dict[str, str]]:
    """Every run a given origin started, oldest tick first."""
    out = []
    for rid in r.zrange(keys.runs(), 0, -1):
        h = {**fields(r, keys.run(rid.decode())), "run_id": rid.decode()}
        if h.get("origin") == origin:
            out.append(h)
    return sorted(out, key=lambda h: int(h.get("tick") or 0))


def test_one_leader_with_a_fresh_token_per_term(r: redis.Redis, keys: Keys) -> None:
    a, b = scheduler(r, keys, name="a"), scheduler(r, keys, name="b")
    a.step(T0)
    b.step(T0)
    assert a.is_leader and not b.is_leader
    assert leader_status(r, keys)["holder"] == "a" and leader_status(r, keys)["token"] == 1
    a.resign()
    b._last_lease_check = float("-inf")
    b.step(T0)
    assert b.is_leader and b.lease is not None and b.lease.token == 2
    assert int(r.get(keys.scheduler_fence())) == 2


def test_a_stale_leader_cannot_send_and_no_tick_is_sent_twice(r: redis.Redis, keys: Keys) -> None:
    s = ScheduleDef("tick", "ping", every=1.0)
    a, b = scheduler(r, keys, s, name="a"), scheduler(r, keys, s, name="b")
    a.step(T0)  # leader; first sight of the schedule: a baseline, nothing sent
    assert a.step(T0 + 1.2) == 1
    # a stalls; its lease expires and b takes over with a newer token
    r.delete(keys.scheduler_lease())
    b.step(T0 + 1.3)
    assert b.is_leader and a.is_leader  # a does not know yet
    assert a.send_tick(s, from_ts(T0 + 2), T0 + 2.1) == ("fenced", "")
    assert not a.is_leader
    assert b.send_tick(s, from_ts(T0 + 1), T0 + 2.1)[0] == "stale"  # already sent by a
    assert b.step(T0 + 2.1) == 1
    ticks = [int(h["tick"]) for h in runs_of(r, keys, "schedule:tick")]
    assert ticks == [to_ms(from_ts(T0 + 1)), to_ms(from_ts(T0 + 2))]


def test_an_old_token_is_refused_even_if_it_holds_the_lease_text(r: redis.Redis, keys: Keys) -> None:
    s = ScheduleDef("tick", "ping", every=1.0)
    a = scheduler(r, keys, s, name="a")
    a.step(T0)
    r.hset(keys.schedule("tick"), "token", 99)  # a newer term already wrote this schedule
    assert a.send_tick(s, from_ts(T0 + 1), T0 + 1.1)[0] == "fenced"


def test_a_tick_is_the_same_message_as_bus_send(r: redis.Redis, keys: Keys) -> None:
    s = ScheduleDef("tick", "reports.daily", every=1.0, params={"region": "eu"})
    a = scheduler(r, keys, s)
    a.step(T0)
    a.step(T0 + 1.01)
    bus_send(r, keys, Message.create("reports.daily", {"region": "eu"}, origin="cli"))
    (_, sched_fields), (_, cli_fields) = r.xrange(keys.stream())
    assert set(sched_fields) == set(cli_fields)
    assert sched_fields[b"o"] == b"schedule:tick" and sched_fields[b"p"] == cli_fields[b"p"]
    (run,) = runs_of(r, keys, "schedule:tick")
    (cli_run,) = runs_of(r, keys, "cli")
    assert run["active"] == cli_run["active"] == "1"
    assert run["topic"] == "reports.daily" and run["schedule"] == "tick"
    assert set(cli_run) <= set(run)


def test_overlap_forbid_skips_ticks_while_the_previous_run_is_active(r: redis.Redis, keys: Keys) -> None:
    s = ScheduleDef("slow", "go", every=1.0, overlap="forbid")
    a = scheduler(r, keys, s)
    a.step(T0)
    assert a.step(T0 + 1.1) == 1
    (first,) = runs_of(r, keys, "schedule:slow")
    assert a.step(T0 + 2.1) == 0  # the first run is still active (its message is in flight)
    assert r.hget(keys.schedule("slow"), "skipped") == b"1"
    r.hset(keys.run(first["run_id"]), Run.active, 0)
    assert a.step(T0 + 3.1) == 1
    assert [int(h["tick"]) // 1000 for h in runs_of(r, keys, "schedule:slow")] == [T0 + 1, T0 + 3]


def test_overlap_allow_sends_regardless(r: redis.Redis, keys: Keys) -> None:
    a = scheduler(r, keys, ScheduleDef("fast", "go", every=1.0))
    a.step(T0)
    assert sum(a.step(T0 + i + 0.1) for i in range(1, 4)) == 3


def test_over_the_work_budget_a_tick_is_skipped_and_says_why(r: redis.Redis, keys: Keys) -> None:
    s = ScheduleDef("tick", "ping", every=1.0)
    a = scheduler(r, keys, s, settings=Settings(backlog=1))
    a.step(T0)
    r.set(keys.work(), 1)  # one message accepted and not finished
    assert a.step(T0 + 1.1) == 0
    assert r.xlen(keys.stream()) == 0 and r.hget(keys.schedule("tick"), "last") == str(to_ms(from_ts(T0 + 1))).encode()
    [row] = schedule_status(r, keys, Config(jobs=(), schedules=(s,)), now=T0 + 1.2)
    assert (row["skipped"], row["last_skipped"]) == (1, T0 + 1)
    assert row["skip_reason"] == "work budget used up: 1 of 1 accepted messages and executions not finished"
    assert a.step(T0 + 1.2) == 0  # a skipped tick is not sent late
    r.set(keys.work(), 0)
    assert a.step(T0 + 2.1) == 1 and r.xlen(keys.stream()) == 1


def test_catch_up_after_an_outage(r: redis.Redis, keys: Keys) -> None:
    once = ScheduleDef("once", "a", every=1.0, catchup="once")
    skip = ScheduleDef("skip", "b", every=1.0)
    a = scheduler(r, keys, once, skip)
    a.step(T0)
    a.step(T0 + 100.5)  # 100 ticks later
    got_once = runs_of(r, keys, "schedule:once")
    got_skip = runs_of(r, keys, "schedule:skip")
    on_time = [T0 + 96 + i for i in range(5)]  # within the 5 s grace period
    assert [int(h["tick"]) / 1000 for h in got_skip] == on_time
    assert [int(h["tick"]) / 1000 for h in got_once] == [T0 + 95] + on_time
    assert got_once[0]["covers"] == "95" and got_once[1]["covers"] == "1"


def test_schedule_status(r: redis.Redis, keys: Keys) -> None:
    s1 = ScheduleDef("tick", "ping", every=60.0)
    s2 = ScheduleDef("nightly", "night", cron="30 1 * * *", timezone="Europe/Paris")
    a = scheduler(r, keys, s1, s2)
    a.step(T0)
    a.step(T0 + 41)  # T0 + 40 is a whole minute
    rows = schedule_status(r, keys, Config(jobs=(), schedules=(s1, s2)), now=T0 + 61)
    assert [row["name"] for row in rows] == ["tick", "nightly"]
    tick, nightly = rows
    assert tick["next_fire"] == next_fire(s1, from_ts(T0 + 61)).timestamp()
    assert tick["last_tick"] == T0 + 40 and tick["last_sent_at"] == T0 + 41
    assert tick["sent"] == 1 and tick["last_run"] and tick["last_run_active"] is True
    assert tick["message"] == "ping" and tick["every"] == 60.0
    assert nightly["sent"] == 0 and nightly["last_run"] is None and nightly["next_fire"] > T0 + 61
    assert set(tick) >= {"name", "message", "cron", "every", "timezone", "params", "catchup", "overlap",
                         "next_fire", "last_tick", "last_sent_at", "last_run", "last_run_active", "sent", "skipped"}


# -- end to end: `angora scheduler` processes --------------------------------------------------------------

SCHEDULES_YML = """
- schedule: beat_once
  message: beat.once
  every: 1s
  catchup: once
- schedule: beat_skip
  message: beat.skip
  every: 1s
- name: listener
  triggers: [beat.once, beat.skip]
  command: "true"
"""


def covered(runs: list[dict[str, str]]) -> list[int]:
    """Every tick (ms) the runs stand for: each run its own tick, a catch-up run also the ticks it covers."""
    out: list[int] = []
    for h in runs:
        tick, covers = int(h["tick"]), int(h.get("covers") or 1)
        out += [tick - 1000 * i for i in range(covers - 1, -1, -1)]
    return out


def test_two_schedulers_send_each_tick_once_and_survive_kill_9_of_the_leader(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys) -> None:
    from angora_testkit import System, wait_for, write_config

    s = System(angora_env, write_config(tmp_path / "config", SCHEDULES_YML), tmp_path)
    try:
        procs = {"s1": s.start("scheduler", "--name", "s1"), "s2": s.start("scheduler", "--name", "s2")}
        wait_for(lambda: len(runs_of(r, keys, "schedule:beat_once")) >= 4, 20, what=f"4 ticks ({s.logs()})")
        leader = leader_status(r, keys)["holder"]
        assert leader in procs
        procs[leader].kill()  # SIGKILL: no resignation, the lease has to expire
        procs[leader].wait()
        other = "s2" if leader == "s1" else "s1"
        # the bound of the requirement ("within 5 s"), used as a bound against hangs
        wait_for(lambda: leader_status(r, keys)["holder"] == other, 5.0, what=f"takeover ({s.logs()})")
        n = len(runs_of(r, keys, "schedule:beat_once"))
        wait_for(lambda: len(runs_of(r, keys, "schedule:beat_once")) >= n + 3, 20, what="ticks after takeover")
    finally:
        s.stop()
    for name in ("beat_once", "beat_skip"):
        runs = runs_of(r, keys, f"schedule:{name}")
        ticks = [int(h["tick"]) for h in runs]
        assert len(ticks) == len(set(ticks)), f"{name}: a tick was sent twice: {ticks}"
        assert all(t % 1000 == 0 for t in ticks)
        assert all(h["topic"] == f"beat.{name[5:]}" for h in runs)
        assert len({h["run_id"] for h in runs}) == len(runs)  # a new run per tick
    once = covered(runs_of(r, keys, "schedule:beat_once"))
    assert once == list(range(once[0], once[-1] + 1000, 1000)), "a tick of the `once` schedule was lost"
    assert int(r.get(keys.scheduler_fence())) >= 2  # a new term after the takeover


def test_schedules_command_shows_next_and_last(angora_env: dict[str, str], tmp_path: Path, r: redis.Redis,
                                               keys: Keys) -> None:
    import json
    import subprocess
    import sys

    cfg = tmp_path / "config"
    cfg.mkdir()
    (cfg / "s.yml").write_text(SCHEDULES_YML)
    a = Scheduler(r, keys, Settings(backlog=1), lambda: Config(jobs=(), schedules=(
        ScheduleDef("beat_once", "beat.once", every=1.0, catchup="once"),)), name="cli-test")
    a.step(T0)
    a.step(T0 + 1.5)
    # The leader stays alive for the rest of the test: its lease (3 s) would otherwise lapse while two CLI
    # processes start on a loaded machine, and "leader: none" is then the right answer.
    r.pexpire(keys.scheduler_lease(), 120_000)
    out = subprocess.run([sys.executable, "-m", "angora_rq.cli", "schedules", "--json", "--config", str(cfg)],
                         env=angora_env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    rows = {row["name"]: row for row in body["schedules"]}
    assert rows["beat_once"]["last_tick"] == T0 + 1 and rows["beat_once"]["sent"] == 1
    assert rows["beat_skip"]["last_tick"] is None and rows["beat_skip"]["next_fire"] is not None
    assert body["leader"]["holder"] == "cli-test"
    text = subprocess.run([sys.executable, "-m", "angora_rq.cli", "schedules", "--config", str(cfg)],
                          env=angora_env, capture_output=True, text=True, timeout=60)
    assert "beat_once" in text.stdout and "leader: cli-test" in text.stderr
    a.step(T0 + 2.5)  # the work budget (1) is used up by the tick sent: this one is skipped, and the command says why
    text = subprocess.run([sys.executable, "-m", "angora_rq.cli", "schedules", "--config", str(cfg)],
                          env=angora_env, capture_output=True, text=True, timeout=60)
    assert "1 skipped" in text.stdout and "work budget used up: 1 of 1" in text.stdout, text.stdout

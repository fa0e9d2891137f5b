"""Backpressure with real processes (matcher, workers, the web server): past the work budget `/send` answers 503
with Retry-After and nothing already accepted is dropped; the `work` counter follows every run's `active`."""
from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis

from angora_rq.core.schema import Run
from angora_testkit import CLI, System, wait_for, write_config
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.pressure import MESSAGE_BYTES, WORK_RETRY_AFTER, Budget, Memory, memory_limit
from angora_rq.core.settings import Settings
from angora_rq.processes.redis_server import free_port
from angora_rq.store import bus
from angora_rq.store.pressure import Pressure

FLOOD = """\
- name: step_a
  triggers: [flood.go]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/a.txt']
  messages: [flood.b]
- name: step_b
  triggers: [flood.b]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/b.txt']
"""


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def counter(r: redis.Redis, key: str) -> int:
    return int(r.get(key) or 0)


def work_and_active(s: System) -> tuple[int, int]:
    """The `work` counter and every run's `active` summed (what it must equal), read in one transaction."""
    runs = [x.decode() for x in s.r.zrange(s.keys.runs(), 0, -1)]
    with s.r.pipeline(transaction=True) as p:
        p.get(s.keys.work())
        for run in runs:
            p.hget(s.keys.run(run), Run.active)
        work, *actives = p.execute()
    return int(work or 0), sum(int(v or 0) for v in actives)


class Sender:
    """POSTs `msg=<topic>` to /send over keep-alive connections from `threads` threads; tallies the answers."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.body = port, f"msg={topic}".encode()
        self.statuses: Counter[int] = Counter()
        self.accepted: list[str] = []  # run ids of the 202s
        self.refusals: list[tuple[str, dict[str, Any]]] = []  # (Retry-After, body) of the first 503s
        self._lock = threading.Lock()

    def send(self, n: int, threads: int = 1) -> None:
        share = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
        workers = [threading.Thread(target=self._loop, args=(k,)) for k in share]
        for t in workers:
            t.start()
        for t in workers:
            t.join()

    def _loop(self, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        for _ in range(n):
            conn.request("POST", "/send", body=self.body, headers=headers)
            resp = conn.getresponse()
            payload = json.loads(resp.read())
            with self._lock:
                self.statuses[resp.status] += 1
                if resp.status == 202:
                    self.accepted.append(payload["run_id"])
                elif resp.status == 503 and len(self.refusals) < 100:
                    self.refusals.append((resp.getheader("Retry-After") or "", payload))
        conn.close()


def start_web(s: System) -> int:
    port = free_port()
    s.start("web", "--port", str(port))
    wait_for(lambda: _answers(port), 60, 0.1, f"the web server on port {port} ({s.logs()})")
    return port


def _answers(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status in (200, 503)
        conn.close()
        return ok
    except OSError:
        return False


def get_json(port: int, path: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def flood(angora_env: dict[str, str], tmp_path: Path, sends: int, threads: int,
          budget: str | None) -> dict[str, Any]:
    """The workers stopped and the matcher running, `sends` messages through /send; then workers start and every
    accepted message's workflow (step_a, then its follow-up step_b) must run once. Returns what was measured."""
    out = tmp_path / "out"
    out.mkdir()
    config = write_config(tmp_path / "config", FLOOD.format(out=out))
    env = dict(angora_env, **({"ANGORA_BACKLOG": budget} if budget else {}))
    s = System(env, config, tmp_path)
    try:
        s.start("matcher")
        port = start_web(s)
        s.r.set(s.keys.accepted(), 0)  # the budgets' counters exist from the start: INFO's baseline includes them
        s.r.set(s.keys.work(), 0)
        before = int(s.r.info("memory")["used_memory"])
        sender = Sender(port, "flood.go")
        sender.send(sends, threads)
        status = get_json(port, "/api/v1/status")
        # The matcher dispatches what was accepted: every message becomes its queued step_a.
        wait_for(lambda: s.r.xpending(s.keys.stream(), "matchers")["pending"] == 0 and
                 s.r.llen(s.keys.rq_queue("default")) == len(sender.accepted), 120, 0.1, "the matcher to catch up")
        after = int(s.r.info("memory")["used_memory"])
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        accepted = set(sender.accepted)
        wait_for(lambda: len(lines(out / "b.txt")) >= len(accepted) and counter(s.r, s.keys.work()) == 0,
                 max(120, len(accepted) / 50), 0.2, f"every accepted workflow to run ({s.logs()})")
        time.sleep(0.5)  # anything run twice would show now
        return {"sender": sender, "a": lines(out / "a.txt"), "b": lines(out / "b.txt"),
                "status": status, "memory": (before, after), "work": work_and_active(s)}
    finally:
        s.stop()


def check_flood(got: dict[str, Any], sends: int, budget: int) -> None:
    sender: Sender = got["sender"]
    assert sum(sender.statuses.values()) == sends and set(sender.statuses) <= {202, 503}, sender.statuses
    accepted = sender.accepted
    assert 0 < len(accepted) <= budget and len(set(accepted)) == len(accepted)
    assert sender.statuses[503] == sends - len(accepted) > 0
    for retry_after, body in sender.refusals:
        assert retry_after == str(WORK_RETRY_AFTER) and body["detail"]["budget"] == "work" and body["error"]
    assert got["status"]["work"]["full"] and got["status"]["work"]["limit"] == budget
    # Every accepted message ran, once; its follow-up too, though the budget was full when it was sent.
    assert sorted(got["a"]) == sorted(accepted) and sorted(got["b"]) == sorted(accepted)
    assert got["work"] == (0, 0)


# -- the budgets' arithmetic and readings ---------------------------------------------------------------------

def test_the_memory_budget_comes_from_the_setting_else_maxmemory_else_the_host() -> None:
    assert memory_limit({"maxmemory": 1000, "total_system_memory": 10**9}, 500) == (500, "ANGORA_MAX_MEMORY")
    assert memory_limit({"maxmemory": 1000, "total_system_memory": 10**9}, 0) == (900, "maxmemory")
    assert memory_limit({"maxmemory": 0, "total_system_memory": 2000}, 0) == (1000, "system memory")
    assert memory_limit({}, 0) == (0, "")
    room = Memory(used=100, limit=100 + 5 * MESSAGE_BYTES + 1, source="maxmemory", accepted=40)
    assert room.accepted_cap == 45 and Budget(memory=room).accepted_cap == "45"
    # Messages still on the stream at the reading will cost their executions: charged too.
    waiting = Memory(used=100, limit=100 + 5 * MESSAGE_BYTES, source="maxmemory", accepted=40, waiting=2)
    assert waiting.accepted_cap == 43
    assert Memory(used=10**9, limit=1, source="maxmemory", accepted=40).accepted_cap == 40  # full: none more
    assert Budget(work=3).accepted_cap == "" and Memory(5, 0, "", 7).accepted_cap is None


def test_memory_is_read_at_most_once_a_second(r: redis.Redis, keys: Keys) -> None:
    now = [100.0]
    pressure = Pressure(r, keys, Settings(), clock=lambda: now[0])
    first = pressure.budget().memory
    assert first is not None and first.limit > 0 and first.accepted == 0
    for _ in range(50):
        bus.send(r, keys, Message.create("t"), pressure.budget())
        now[0] += 0.01
    assert pressure.budget().memory is first  # 50 messages, half a second: no new reading
    now[0] += 0.5
    second = pressure.budget().memory
    assert second is not first and second is not None and second.accepted == 50 and second.waiting == 50


def test_a_redis_that_refuses_info_has_only_the_work_budget(keys: Keys) -> None:
    pressure = Pressure(fakeredis.FakeRedis(), keys, Settings(backlog=7))  # fakeredis has no INFO
    assert pressure.budget() == Budget(work=7, memory=None)
    assert pressure.usage()["memory"] == {"used": None, "limit": None, "source": None, "ratio": None, "full": False,
                                        "policy": None, "warning": None}


# -- with real processes --------------------------------------------------------------------------------------

def test_past_the_work_budget_send_is_503_and_every_accepted_message_runs(angora_env: dict[str, str],
                                                                           tmp_path: Path) -> None:
    got = flood(angora_env, tmp_path, sends=200, threads=2, budget="50")
    check_flood(got, 200, 50)
    assert len(got["sender"].accepted) == 50  # the sends are not concurrent enough to fall short


def test_angora_send_past_the_budget_exits_75(angora_env: dict[str, str], tmp_path: Path) -> None:
    env = dict(angora_env, ANGORA_BACKLOG="1")
    first = subprocess.run([*CLI, "send", "x.y"], env=env, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([*CLI, "send", "x.y"], env=env, capture_output=True, text=True, timeout=60)
    assert second.returncode == 75 and f"retry after {WORK_RETRY_AFTER}s" in second.stderr
    assert "Traceback" not in second.stderr


COUNTED = """\
- name: fan
  triggers: [inv.go]
  command: 'true'
  messages: [inv.left, inv.right]
- name: left
  triggers: [inv.left]
  command: 'true'
  messages: [inv.l.done]
- name: right
  triggers: [inv.right]
  command: 'true'
  messages: [inv.r.done]
- name: join
  triggers: [inv.l.done, inv.r.done]
  parent_success: true
  command: 'true'
- name: flaky
  triggers: [inv.go]
  command: 'false'
  replay: 1
  replay_delay: 0.2
- name: narrow
  triggers: [inv.go]
  command: [sleep, '0.02']
  concurrency: 1
"""


def test_the_work_counter_follows_every_run_to_zero(angora_env: dict[str, str], tmp_path: Path) -> None:
    """Fan-out, a join, replays, a concurrency limit (held executions), messages that start nothing, a paused job
    and a canceled run: once everything is over, the counter is back at zero, as every run's `active` is."""
    from angora_rq.store.control import Control
    from angora_rq.store.pausing import pause_job, resume_job

    s = System(angora_env, write_config(tmp_path / "config", COUNTED), tmp_path)
    try:
        pause_job(s.r, s.keys, "narrow")
        s.start("matcher")
        runs = [s.send("inv.go") for _ in range(20)] + [s.send("inv.nothing") for _ in range(5)]
        control = Control(s.r, s.keys, Settings.from_env(angora_env))
        wait_for(lambda: s.r.llen(s.keys.paused_held("narrow")) == 20, 30, 0.05, f"the matcher ({s.logs()})")
        control.cancel_run(runs[0])  # its executions are queued: dropped now
        work, active = work_and_active(s)
        assert work == active > 0
        s.start("worker", "-c", "4")
        resume_job(s.r, s.keys, "narrow")
        for run in runs:
            s.wait_run(run, timeout=60)
        assert work_and_active(s) == (0, 0)
    finally:
        s.stop()


# -- chaos (long: ./scripts/test -m chaos) --------------------------------------------------------------------

@pytest.mark.chaos
def test_chaos_200000_sends_with_the_workers_stopped(angora_env: dict[str, str], tmp_path: Path) -> None:
    """The issue's flood at the default budget (20,000): the rest is refused; Redis grows by at most
    MESSAGE_BYTES per accepted message (1.3 KB measured for a queued one); after the workers start, every accepted
    message runs."""
    budget = Settings().backlog
    got = flood(angora_env, tmp_path, sends=200_000, threads=8, budget=None)
    check_flood(got, 200_000, budget)
    before, after = got["memory"]
    accepted = len(got["sender"].accepted)
    grown = after - before
    print(f"\nflood: {accepted} accepted, {got['sender'].statuses[503]} refused; used_memory {before / 2**20:.1f} "
          f"-> {after / 2**20:.1f} MiB ({grown / max(accepted, 1):.0f} bytes per accepted message)")
    assert grown <= budget * MESSAGE_BYTES

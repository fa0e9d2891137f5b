"""No accepted work lost when Redis goes away (issue 13): real matcher and worker processes on a private redis-server
(AOF everysec) that the test SIGKILLs, SHUTDOWNs and restarts, or behind a TCP proxy that resets connections.

Every job appends `RUN JOB ATTEMPT` to one file, so a command that ran twice shows: a second line with a higher
attempt is a recorded replay, a second line with the same attempt a silent duplicate. Each test prints its figures
(run pytest with -s to see them): losses, silent duplicates, replays, and the time from Redis answering again to
the first job that finished after it.
"""
from __future__ import annotations

import collections
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from angora_rq.core.errors import Unavailable
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.runs import is_terminal
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.store.bus import send
from angora_rq.core.schema import Exec, Run
from angora_testkit import DATA_LOST, System, wait_for, write_config
from tcp_proxy import ResettingProxy

JOBS = """
- name: f1_a
  triggers: [f1.a]
  command: ["sh", "-c", "echo $ANGORA_RUN_ID f1_a $ANGORA_ATTEMPT >> {out}"]
  messages: [f1.b]
  replay_delay: 0.2
- name: f1_b
  triggers: [f1.b]
  command: ["sh", "-c", "echo $ANGORA_RUN_ID f1_b $ANGORA_ATTEMPT >> {out}"]
  replay_delay: 0.2
- schedule: heartbeat
  every: 1s
  message: ticks.nobody.listens
"""
WAITING = ("running", "queued", "delayed", "held")


# -- the pieces ------------------------------------------------------------------------------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test alone (it gets killed): loopback, free port, AOF everysec in a temp dir."""
    server = RedisServer(data_dir=tmp_path / "redis", port=free_port(), appendonly=True).start()
    yield server
    server.stop()


def make_system(own_redis: RedisServer, angora_env: dict[str, str], tmp_path: Path) -> tuple[System, Path]:
    """A System on the test's own server (db 0), its two-job workflow, and the file its jobs append to."""
    out = tmp_path / "ran.txt"
    cfg = write_config(tmp_path / "config", JOBS.replace("{out}", str(out)))
    env = dict(angora_env, REDIS_URL=own_redis.url, ANGORA_CLAIM_IDLE="1", ANGORA_REPLAY_MAX_DELAY="1")
    return System(env, cfg, tmp_path), out


class Sender(threading.Thread):
    """Sends `n` workflows at about `rate` per second; a send that fails is retried as a new run (not accepted)."""

    def __init__(self, send_one: Callable[[], str], n: int, rate: float) -> None:
        super().__init__(daemon=True)
        self.send_one, self.n, self.rate = send_one, n, rate
        self.accepted: list[str] = []
        self.refused = 0

    def run(self) -> None:
        t0 = time.monotonic()
        while len(self.accepted) < self.n:
            try:
                self.accepted.append(self.send_one())
            except (Unavailable, redis.exceptions.RedisError, OSError):
                self.refused += 1
                time.sleep(0.05)
                continue
            ahead = t0 + len(self.accepted) / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)


def api_sender(url: str, keys: Keys) -> Callable[[], str]:
    """One send through the Python API (`bus.send`), on a client that gives up quickly while Redis is down."""
    r = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)

    def send_one() -> str:
        msg = Message.create("f1.a", origin="test")
        send(r, keys, msg)
        return msg.run_id
    return send_one


def http_sender(port: int, refusals: collections.Counter) -> Callable[[], str]:
    """One `POST /send` (the original's form); anything but 202 is a refusal, counted by status in `refusals`."""
    import requests

    session = requests.Session()

    def send_one() -> str:
        resp = session.post(f"http://127.0.0.1:{port}/send", data={"msg": "f1.a"}, timeout=10)
        if resp.status_code != 202:
            refusals[resp.status_code] += 1
            raise Unavailable(f"{resp.status_code}: {resp.text[:200]}")
        return str(resp.json()["run_id"])
    return send_one


def restart(server: RedisServer, how: str, down_for: float) -> float:
    """Stop Redis (`kill`: SIGKILL; `shutdown`: SHUTDOWN), start it again from its AOF; return when it answers."""
    if how == "kill":
        server.kill()
    else:
        try:
            redis.Redis.from_url(server.url).shutdown()
        except redis.exceptions.RedisError:
            pass
        assert server.proc is not None
        server.proc.wait(30)
    time.sleep(down_for)
    server.start()
    return time.time()


# -- what the test asserts -------------------------------------------------------------------------------------------
@dataclass
class Figures:
    """What happened to every accepted workflow."""

    accepted: int = 0
    unfinished: list[str] = field(default_factory=list)  # accepted runs not final (or a job never ran)
    left_waiting: dict[str, int] = field(default_factory=dict)  # executions still running/queued/..., by status
    silent_duplicates: int = 0  # a (run, job, attempt) that ran more than once
    replays: int = 0  # (run, job) that ran under more than one attempt: recorded
    to_first_finish: list[float] = field(default_factory=list)  # per restart: Redis back -> first job ended

    def line(self, name: str) -> str:
        firsts = ", ".join(f"{t:.2f}s" for t in self.to_first_finish) or "-"
        return (f"\n[{name}] accepted {self.accepted}, lost {len(self.unfinished)}, left waiting "
                f"{sum(self.left_waiting.values())}, silent duplicates {self.silent_duplicates}, recorded replays "
                f"{self.replays}; Redis back -> first finished job: {firsts}")


def unfinished_runs(r: redis.Redis, keys: Keys, run_ids: list[str]) -> list[str]:
    """Accepted runs with work in flight or a job not final."""
    with r.pipeline(transaction=False) as p:
        for rid in run_ids:
            p.hmget(keys.run(rid), Run.active, "s:f1_a", "s:f1_b")
        rows = p.execute()
    bad = []
    for rid, (active, a, b) in zip(run_ids, rows):
        if int(active or 0) != 0 or not all(s and is_terminal(s.decode()) for s in (a, b)):
            bad.append(rid)
    return bad


def executions(r: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    """status and ended of every execution (a SCAN: only once things have settled)."""
    ids = list(r.scan_iter(match=keys.execution("*"), count=1000))
    with r.pipeline(transaction=False) as p:
        for k in ids:
            p.hmget(k, Exec.status, Exec.ended)
        rows = p.execute()
    return [{"status": (s or b"").decode(), "ended": (e or b"").decode()} for s, e in rows]


def settle(s: System, out: Path, accepted: list[str], restarts: list[float], timeout: float = 120) -> Figures:
    """Wait until every accepted run is final (bounded), then count."""
    def done() -> bool:
        return not unfinished_runs(s.r, s.keys, accepted) and not s.r.xpending(s.keys.stream(), "matchers")["pending"]
    try:
        wait_for(done, timeout, interval=0.5, what="every accepted run to be final")
    except AssertionError:
        pass  # counted below
    figures = Figures(accepted=len(accepted), unfinished=unfinished_runs(s.r, s.keys, accepted))
    rows = executions(s.r, s.keys)
    figures.left_waiting = dict(collections.Counter(x["status"] for x in rows if x["status"] in WAITING))
    ended = sorted(float(x["ended"]) for x in rows if x["ended"])
    figures.to_first_finish = [next((e - t for e in ended if e >= t), float("nan")) for t in restarts]
    lines = collections.Counter(tuple(line.split()) for line in out.read_text().splitlines()) if out.exists() else {}
    figures.silent_duplicates = sum(n - 1 for n in lines.values() if n > 1)
    attempts = collections.Counter((run, job) for run, job, _ in lines)
    figures.replays = sum(1 for n in attempts.values() if n > 1)
    ran = {(run, job) for run, job, _ in lines}
    figures.unfinished += [rid for rid in accepted if rid not in figures.unfinished
                           and not {(rid, "f1_a"), (rid, "f1_b")} <= ran]
    return figures


def check(figures: Figures, s: System) -> None:
    assert not figures.unfinished, f"{len(figures.unfinished)} accepted runs not final: {figures.unfinished[:5]}" \
                                   f"{s.logs()}"
    assert not figures.left_waiting, f"executions left waiting: {figures.left_waiting}"
    assert figures.silent_duplicates == 0
    # Redis came back from its AOF each time: no role may say it came back without Angora's data.
    assert s.said(DATA_LOST) == 0, f"a role reported the data lost after a restart from the AOF\n{s.logs()}"


# -- Redis killed, shut down and restarted ---------------------------------------------------------------------------
def run_restarts(s: System, out: Path, server: RedisServer, sender: Sender, plan: list[tuple[float, str]],
                 down_for: float, name: str) -> Figures:
    """Start the sender, then restart Redis per `plan` ((seconds after the previous step, 'kill'|'shutdown'))."""
    sender.start()
    restarts = []
    for wait, how in plan:
        time.sleep(wait)
        restarts.append(restart(server, how, down_for))
    sender.join(600)
    figures = settle(s, out, sender.accepted, restarts, timeout=180)
    print(figures.line(name) + f"; refused sends {sender.refused}")
    dead = {n: p.returncode for n, p in s.procs.items() if p.poll() is not None}
    assert not dead, f"processes that did not survive the outages: {dead}\n{s.logs()}"
    return figures


def test_redis_killed_and_shut_down_while_workflows_flow(own_redis: RedisServer, angora_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    s, out = make_system(own_redis, angora_env, tmp_path)
    try:
        s.start("matcher")
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        s.start("scheduler")
        sender = Sender(api_sender(own_redis.url, s.keys), n=400, rate=100)
        figures = run_restarts(s, out, own_redis, sender, [(1.0, "kill"), (1.0, "shutdown")], 1.5, "restarts")
        check(figures, s)
        back = time.time()
        wait_for(lambda: int(s.r.hget(s.keys.schedule("heartbeat"), "last") or 0) / 1000 > back, 30,
                 what="the scheduler to send ticks again")
    finally:
        s.stop()


@pytest.mark.chaos
def test_chaos_redis_restarted_six_times_under_5000_workflows_through_send(
        own_redis: RedisServer, angora_env: dict[str, str], tmp_path: Path) -> None:
    """The issue's scenario: 5,000 workflows through `POST /send` at ~200/s, Redis SIGKILLed 5 times and shut down
    once, each time restarted from its AOF 3 s later; two matchers, two workers."""
    s, out = make_system(own_redis, angora_env, tmp_path)
    port = free_port()
    try:
        s.start("web", "--port", str(port))
        s.start("matcher")
        s.start("matcher")
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        s.start("scheduler")
        wait_for(lambda: _answers(port), 60, what="the web server")
        refusals: collections.Counter = collections.Counter()
        sender = Sender(http_sender(port, refusals), n=5000, rate=200)
        plan = [(2.0, "kill"), (2.5, "kill"), (2.5, "shutdown"), (2.5, "kill"), (2.5, "kill"), (2.5, "kill")]
        figures = run_restarts(s, out, own_redis, sender, plan, 3.0, "chaos restarts")
        check(figures, s)
        assert set(refusals) <= {503}, f"/send refused with {dict(refusals)} (503 expected while Redis is down)"
    finally:
        s.stop()


class Crowd(Sender):
    """Several Senders at once, as one: their accepted runs and refusals together."""

    def __init__(self, senders: list[Sender]) -> None:
        super().__init__(lambda: "", 0, 1.0)
        self.senders = senders

    def run(self) -> None:
        for one in self.senders:
            one.start()
        for one in self.senders:
            one.join(600)
        self.accepted = [run for one in self.senders for run in one.accepted]
        self.refused = sum(one.refused for one in self.senders)


@pytest.mark.chaos
def test_chaos_redis_restarted_while_16_clients_send_at_once(
        own_redis: RedisServer, angora_env: dict[str, str], tmp_path: Path) -> None:
    """The same through the web's group commit: 16 clients sending at once, each as fast as it is answered (4,800
    workflows), so a web process has several sends in hand and they go to Redis in batches; Redis SIGKILLed twice
    and shut down once, 3 s each. A batch cut by the outage answers 503 to each of its messages; every 202 runs,
    once."""
    s, out = make_system(own_redis, angora_env, tmp_path)
    port = free_port()
    try:
        s.start("web", "--port", str(port), "--workers", "2")
        s.start("matcher")
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        wait_for(lambda: _answers(port), 60, what="the web server")
        refusals: collections.Counter = collections.Counter()
        crowd = Crowd([Sender(http_sender(port, refusals), n=300, rate=1000) for _ in range(16)])
        figures = run_restarts(s, out, own_redis, crowd, [(1.5, "kill"), (2.0, "shutdown"), (2.0, "kill")], 3.0,
                               "restarts under 16 senders")
        check(figures, s)
        assert len(crowd.accepted) == 16 * 300
        assert set(refusals) <= {503}, f"/send refused with {dict(refusals)} (503 expected while Redis is down)"
    finally:
        s.stop()


def _answers(port: int) -> bool:
    import requests

    try:
        return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 500
    except requests.RequestException:
        return False


# -- connections reset between the workers and Redis -----------------------------------------------------------------
def proxied_workers(s: System, proxy: ResettingProxy, workers: int) -> None:
    for _ in range(workers):
        s.start("worker", "-c", "8", extra_env={"REDIS_URL": proxy.url})


@pytest.mark.parametrize("n,resets", [(100, 10)])
def test_connections_reset_between_workers_and_redis(own_redis: RedisServer, angora_env: dict[str, str],
                                                     tmp_path: Path, n: int, resets: int) -> None:
    s, out = make_system(own_redis, angora_env, tmp_path)
    proxy = ResettingProxy(own_redis.port).start()
    try:
        s.start("matcher")
        proxied_workers(s, proxy, 2)
        figures = reset_during(s, out, proxy, n, resets, rate=50, name="resets")
        check(figures, s)
    finally:
        s.stop()
        proxy.close()


@pytest.mark.chaos
def test_chaos_connections_reset_50_times_during_2000_jobs(own_redis: RedisServer, angora_env: dict[str, str],
                                                          tmp_path: Path) -> None:
    s, out = make_system(own_redis, angora_env, tmp_path)
    proxy = ResettingProxy(own_redis.port).start()
    try:
        s.start("matcher")
        proxied_workers(s, proxy, 2)
        figures = reset_during(s, out, proxy, 1000, 50, rate=100, name="chaos resets")
        check(figures, s)
    finally:
        s.stop()
        proxy.close()


def reset_during(s: System, out: Path, proxy: ResettingProxy, n: int, resets: int, rate: float,
                 name: str) -> Figures:
    """Send n workflows (2n jobs) at `rate`/s and reset the workers' connections `resets` times meanwhile: at
    random moments, and aimed at transactions and script calls (request lost, or applied with its reply lost)."""
    kinds = [None, (b"EXEC", True), (b"EXEC", False), (b"EVALSHA", True), (b"EVALSHA", False)]
    sender = Sender(api_sender(s.env["REDIS_URL"], s.keys), n=n, rate=rate)
    t0 = time.monotonic()
    sender.start()
    for i, at in enumerate(sorted(random.uniform(0.1, 0.1 + n / rate) for _ in range(resets))):
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        kind, before = kinds[i % len(kinds)], proxy.resets
        if kind is None:
            proxy.reset()
        else:
            proxy.reset_on(*kind)
            deadline = time.monotonic() + 2
            while proxy.resets == before and time.monotonic() < deadline:
                time.sleep(0.001)
    sender.join(600)
    figures = settle(s, out, sender.accepted, [], timeout=180)
    print(figures.line(name) + f"; resets {proxy.resets}; " + recoveries(s))
    return figures


def recoveries(s: System) -> str:
    """What the workers' logs say they recovered from (shows the resets hit where it matters)."""
    text = "".join(p.read_text(errors="replace") for p in s.workdir.glob("worker*.log"))
    return (f"worker logs: {text.count('Redis unreachable')} outages, {text.count('found again')} lost claim "
            f"replies, {text.count('already recorded')} ends already recorded")


# -- a worker stopped in the middle of an outage ---------------------------------------------------------------------
SLOW_JOBS = """
- name: slow
  triggers: [slow]
  command: ["sh", "-c", "echo $ANGORA_RUN_ID >> {starts}; sleep 1.5; echo $ANGORA_RUN_ID $ANGORA_ATTEMPT >> {out}"]
  replay_delay: 0.2
"""


def test_worker_stopped_during_an_outage_leaves_its_work_to_another(
        own_redis: RedisServer, angora_env: dict[str, str], tmp_path: Path) -> None:
    """Redis dies while a worker runs 4 commands; the worker is told to stop; its commands end with nowhere to
    record their outcomes, so it writes them to disk and exits. Redis comes back, a new worker on the host records
    them: every run succeeds at its first attempt, nothing ran twice."""
    out, starts = tmp_path / "ran.txt", tmp_path / "starts.txt"
    cfg = write_config(tmp_path / "config", SLOW_JOBS.replace("{out}", str(out)).replace("{starts}", str(starts)))
    s = System(dict(angora_env, REDIS_URL=own_redis.url), cfg, tmp_path)
    try:
        s.start("matcher")
        first = s.start("worker", "-c", "8", "--grace", "3")
        run_ids = [s.send("slow") for _ in range(4)]
        wait_for(lambda: starts.exists() and len(starts.read_text().splitlines()) >= 4, 30, what="4 starts")
        own_redis.kill()
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0, s.logs()
        spilled = list((Path(s.env["ANGORA_DATA_DIR"]) / "outcomes").rglob("*.jsonl"))
        assert spilled, s.logs()
        own_redis.start()
        back = time.time()
        s.start("worker", "-c", "8")
        figures = settle_runs(s, out, run_ids)
        print(figures.line("worker stopped in an outage") + f"; Redis back -> all recorded: {time.time() - back:.2f}s")
        assert not figures.unfinished and not figures.left_waiting and figures.silent_duplicates == 0, s.logs()
        assert [e["attempt"] for rid in run_ids for e in s.executions(rid)] == [1] * 4
        assert not list((Path(s.env["ANGORA_DATA_DIR"]) / "outcomes").rglob("*.jsonl"))
    finally:
        s.stop()


def settle_runs(s: System, out: Path, run_ids: list[str]) -> Figures:
    """settle() for the one-job workflow of SLOW_JOBS."""
    def pending() -> list[str]:
        return [rid for rid in run_ids if s.q.run(rid)["status"] in ("running", "queued") or s.q.run(rid)["active"]]
    try:
        wait_for(lambda: not pending(), 60, interval=0.2)
    except AssertionError:
        pass
    figures = Figures(accepted=len(run_ids), unfinished=pending())
    rows = executions(s.r, s.keys)
    figures.left_waiting = dict(collections.Counter(x["status"] for x in rows if x["status"] in WAITING))
    lines = collections.Counter(out.read_text().splitlines()) if out.exists() else {}
    figures.silent_duplicates = sum(n - 1 for n in lines.values() if n > 1)
    return figures


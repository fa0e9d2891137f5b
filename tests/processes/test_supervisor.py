"""The supervisor behind `angora up`: real child processes, a real Redis, and the command run as a user runs it."""
from __future__ import annotations

import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from angora_rq.cli.up_cmds import plan, redacted
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.store.connection import ping
from angora_rq.processes.supervisor import Policy, ProcSpec, Supervisor, SupervisorError

BOUND = 30.0  # seconds: a bound against hangs, never a speed requirement


def py(code: str) -> list[str]:
    """argv running `code` with this interpreter, unbuffered."""
    return [sys.executable, "-u", "-c", code]


SLEEPER = py("import time; print('up'); time.sleep(300)")
STUBBORN = py("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready'); time.sleep(300)")


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def step_until(sup: Supervisor, predicate: Callable[[], bool], timeout: float = BOUND) -> None:
    """Step the supervisor until `predicate` holds; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        sup.step(0.05)


class RecordingRedis(RedisServer):
    """A RedisServer that records which supervised pids were still alive when it was asked to stop."""

    watched: list[int] = []
    alive_at_stop: list[int] | None = None

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive_at_stop is None and self.proc is not None:
            self.alive_at_stop = [pid for pid in self.watched if pid_alive(pid)]
        super().stop(timeout)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RecordingRedis]:
    """A stopped Redis the supervisor starts itself."""
    srv = RecordingRedis(data_dir=tmp_path / "redis", unix_socket=tmp_path / "r.sock")
    srv.watched = []
    yield srv
    srv.stop()


def supervisor(procs: list[ProcSpec], redis_server: RedisServer | None = None, **policy: float) -> Supervisor:
    return Supervisor(procs, redis_server, out=io.StringIO(), colour=False, policy=Policy(**policy))  # type: ignore[arg-type]


def output(sup: Supervisor) -> str:
    assert isinstance(sup.out, io.StringIO)
    return sup.out.getvalue()


def test_output_is_prefixed_line_by_line(server: RecordingRedis) -> None:
    talker = py("import sys, time; print('one'); print('two', file=sys.stderr); sys.stdout.write('tail'); "
                "sys.stdout.flush(); time.sleep(300)")
    sup = supervisor([ProcSpec("talker", talker), ProcSpec("matcher", SLEEPER)], server)
    try:
        sup.start()
        step_until(sup, lambda: "two" in output(sup) and "matcher | up" in output(sup))
    finally:
        sup.stop()
    lines = output(sup).splitlines()
    assert "talker  | one" in lines
    assert "talker  | two" in lines  # stderr is relayed too
    assert "talker  | tail" in lines  # the last line without a newline is not lost
    assert any(line.startswith("angora  | redis started") for line in lines)


def test_colour_only_when_asked() -> None:
    out = io.StringIO()
    Supervisor([ProcSpec("web", SLEEPER)], out=out, colour=True).emit("web", "hello", 36)
    assert out.getvalue() == "\x1b[36mweb    |\x1b[0m hello\n"
    assert not Supervisor([], out=io.StringIO()).colour  # a StringIO is not a terminal


def test_a_closed_output_does_not_stop_supervision() -> None:
    out = io.StringIO()
    sup = Supervisor([ProcSpec("matcher", SLEEPER)], out=out, colour=False, policy=Policy(grace=5))
    try:
        sup.start()
        out.close()  # like `angora up | head` once head has exited
        sup.step(0.1)
        pid = sup.pids()["matcher"]
    finally:
        sup.stop()
    assert not pid_alive(pid)


def test_stop_kills_the_stubborn_and_stops_redis_last(server: RecordingRedis) -> None:
    sup = supervisor([ProcSpec("polite", SLEEPER), ProcSpec("stubborn", STUBBORN)], server, grace=1.0)
    try:
        sup.start()
        step_until(sup, lambda: "stubborn | ready" in output(sup) and "polite   | up" in output(sup))
        pids = sup.pids()
        server.watched = [pids["polite"], pids["stubborn"]]
    finally:
        sup.stop()
    text = output(sup)
    assert "polite was killed by SIGTERM" in text
    assert "stubborn did not stop within 1s: SIGKILL" in text
    assert "stubborn was killed by SIGKILL" in text
    assert server.alive_at_stop == []  # Redis was stopped only once every child was gone
    assert text.index("stubborn was killed") < text.index("stopping redis")
    assert not any(pid_alive(pid) for pid in pids.values())


def test_grandchildren_left_in_a_group_are_killed(tmp_path: Path) -> None:
    # The leader exits on SIGTERM but its own child ignores it: nothing may stay behind.
    leader = py(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', "
        "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(\\'ignoring\\', flush=True); "
        "time.sleep(300)'])\n"
        "print('grandchild', child.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    sup = supervisor([ProcSpec("leader", leader)], grace=5.0)
    try:
        sup.start()
        step_until(sup, lambda: "grandchild" in output(sup) and "leader | ignoring" in output(sup))
        grandchild = int(output(sup).split("grandchild ")[1].split()[0])
    finally:
        sup.stop()
    assert "leader left processes in its group" in output(sup)
    deadline = time.monotonic() + BOUND
    while pid_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(grandchild)


def test_a_child_that_dies_is_restarted(server: RecordingRedis) -> None:
    sup = supervisor([ProcSpec("worker.1", SLEEPER)], server, backoff=0.1)
    try:
        sup.start()
        step_until(sup, lambda: "worker.1 | up" in output(sup))
        first = sup.pids()["worker.1"]
        os.kill(first, signal.SIGKILL)
        step_until(sup, lambda: sup.pids().get("worker.1") not in (None, first))
        step_until(sup, lambda: output(sup).count("worker.1 | up") == 2)
    finally:
        sup.stop()
    assert "worker.1 was killed by SIGKILL after" in output(sup)
    assert "restarting in 0.1s" in output(sup)


def test_a_child_failing_at_startup_stops_everything(server: RecordingRedis) -> None:
    broken = py("import sys; print('cannot import something'); sys.exit(3)")
    sup = supervisor([ProcSpec("matcher", broken), ProcSpec("web", SLEEPER)], server, backoff=0.05)
    try:
        sup.start()
        with pytest.raises(SupervisorError) as info:
            step_until(sup, lambda: False)
        server.watched = [pid for name, pid in sup.pids().items() if name != "redis"]
    finally:
        sup.stop()
    message = info.value.message
    assert "matcher failed to start: 3 times in a row" in message
    assert "exited with status 3" in message and "cannot import something" in message
    assert server.alive_at_stop == []
    assert not ping(server.url)


def test_redis_that_dies_is_restarted(server: RecordingRedis) -> None:
    sup = supervisor([ProcSpec("matcher", SLEEPER)], server)
    try:
        sup.start()
        redis.Redis.from_url(server.url).set("k", "v")
        assert server.proc is not None
        server.proc.kill()
        server.proc.wait()
        step_until(sup, lambda: "redis restarted" in output(sup))
        assert ping(server.url)
    finally:
        sup.stop()
    assert "redis was killed by SIGKILL; restarting it" in output(sup)


def test_plan_names_and_arguments() -> None:
    env = {"REDIS_URL": "unix:///x"}
    procs = plan(2, True, 5001, 10.0, {}, env)
    assert [p.name for p in procs] == ["matcher", "worker.1", "worker.2", "scheduler", "web"]
    assert procs[0].argv == [sys.executable, "-m", "angora_rq.cli", "matcher"]
    assert procs[1].argv[-2:] == ["--grace", "7"]
    assert procs[-1].argv[-2:] == ["--port", "5001"]
    assert all(p.env == env for p in procs)
    assert [p.name for p in plan(0, False, None, 10.0, {"matcher": ["true"]}, env)] == ["matcher"]
    assert redacted("redis://:secret@host:6379/0") == "redis://:***@host:6379/0"


# -- `angora up` as a real process ----------------------------------------------------------------------------

def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class UpProcess:
    """`angora up` running in the background, its output collected by a thread."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "angora_rq.cli", "up", *args], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = BOUND) -> str:
        """The first line containing `text` (earlier ones are kept in `seen`)."""
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r}; output so far:\n" + "\n".join(self.seen)) from None
            self.seen.append(line)
            if text in line:
                return line

    def text(self) -> str:
        """Everything printed so far."""
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return "\n".join(self.seen)

    def finish(self) -> int:
        """SIGTERM `up` (if still running) and return its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(BOUND)
        time.sleep(0.2)  # let the reader thread take the last lines
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return code


@pytest.fixture
def up_env(tmp_path: Path) -> dict[str, str]:
    """An environment with no REDIS_URL (so `up` embeds Redis) and a data dir of this test."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "ANGORA_REDIS_URL", "ANGORA_CONFIG")}
    env.update(ANGORA_DATA_DIR=str(tmp_path / "d"), PYTHONUNBUFFERED="1")
    return env


REPORTER = ("import os, time, redis; r = redis.Redis.from_url(os.environ['REDIS_URL']); "
            "print('url', os.environ['REDIS_URL'], 'config', os.environ.get('ANGORA_CONFIG'), 'ping', r.ping(), "
            "flush=True); time.sleep(300)")


def test_angora_up_runs_and_stops_cleanly(up_env: dict[str, str], tmp_path: Path) -> None:
    role = f"{sys.executable} -u -c \"{REPORTER}\""
    (tmp_path / "cfg").mkdir()  # `up` checks the definitions before it starts anything
    (tmp_path / "cfg" / "jobs.yml").write_text("- {name: noop, triggers: [noop], command: 'true'}\n")
    up = UpProcess(["--no-web", "--no-scheduler", "--workers", "2", "--grace", "3", "--config", str(tmp_path / "cfg"),
                    "--role-command", f"matcher={role}", "--role-command", f"worker={role}"], up_env)
    try:
        socket = tmp_path / "d" / "redis.sock"
        line = up.wait_for("worker.2 | url")
        assert f"url unix://{socket} config {tmp_path / 'cfg'} ping True" in line
        up.wait_for("matcher  | url")
        children = descendants(up.proc.pid)
        assert len(children) >= 4  # redis, matcher, two workers
    finally:
        code = up.finish()
    assert code == 0, "\n".join(up.seen)
    assert not [pid for pid in children if pid_alive(pid)]
    assert up.seen[-1].endswith("all stopped")
    assert not socket.exists() or not ping(f"unix://{socket}")


def test_second_angora_up_is_refused(up_env: dict[str, str]) -> None:
    sleeper = f"matcher={sys.executable} -c \"import time; time.sleep(300)\""
    args = ["--no-web", "--no-scheduler", "--workers", "0", "--role-command", sleeper]
    first = UpProcess(args, up_env)
    try:
        first.wait_for("matcher started")
        second = subprocess.run([sys.executable, "-m", "angora_rq.cli", "up", *args], env=up_env,
                                capture_output=True, text=True, timeout=BOUND)
        assert second.returncode == 1
        assert "already running" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        assert first.finish() == 0



def test_angora_up_runs_a_job_end_to_end(up_env: dict[str, str], tmp_path: Path) -> None:
    # Real matcher, worker, scheduler and web, started by `up` on its embedded Redis; `angora send` finds that Redis
    # itself.
    config = tmp_path / "config"
    config.mkdir()
    (config / "jobs.yml").write_text(f"- {{name: touch, triggers: [e2e.go], command: [touch, '{tmp_path}/done']}}\n")
    port = free_port()
    env = {k: v for k, v in up_env.items() if not k.startswith("ANGORA_AUTH_")}
    up = UpProcess(["--workers", "1", "--port", str(port), "--config", str(config)], env)
    try:
        assert f"http://127.0.0.1:{port}/" in up.wait_for("web UI:")
        sent = subprocess.run([sys.executable, "-m", "angora_rq.cli", "send", "e2e.go"],
                              env=env, capture_output=True, text=True, timeout=BOUND)
        assert sent.returncode == 0, sent.stdout + sent.stderr + up.text()
        deadline = time.monotonic() + BOUND
        while not (tmp_path / "done").exists():
            assert time.monotonic() < deadline and up.proc.poll() is None, "the job did not run:\n" + up.text()
            time.sleep(0.05)
        assert http_status(f"http://127.0.0.1:{port}/", deadline=time.monotonic() + BOUND) == 200, up.text()
        children = descendants(up.proc.pid)
    finally:
        code = up.finish()
    assert code == 0, up.text()
    assert not [pid for pid in children if pid_alive(pid)]


def http_status(url: str, deadline: float) -> int:
    """The HTTP status of GET `url`, retrying while nothing listens yet."""
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as e:
            return int(e.code)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

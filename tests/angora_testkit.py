"""Start Angora's real processes (matcher, workers) for end-to-end tests, the way a user does."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import redis

from angora_rq.core.codec import to_str_dict
from angora_rq.core.schema import Exec, JobStats, Names, Run
from angora_rq.store.bus import send
from angora_rq.store.connection import client_for
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.processes.redis_server import free_port
from angora_rq.store.queries import Queries

CLI = [sys.executable, "-m", "angora_rq.cli"]
# What a role logs when Redis came back from an outage without Angora's data (processes/datawatch.py).
DATA_LOST = "Redis came back without Angora's data"


# -- the Procfile's web line, run as a Procfile runner runs it -------------------------------------------------

PROCFILE = Path(__file__).resolve().parents[1] / "Procfile"


def web_line() -> str:
    """The command of the Procfile's web process."""
    return next(line for line in PROCFILE.read_text().splitlines() if line.startswith("web:"))[len("web:"):].strip()


def listening(port: int) -> bool:
    """Whether something accepts connections on the loopback `port`."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def group_gone(proc: subprocess.Popen, timeout: float) -> bool:
    """Whether every process of `proc`'s group has exited within `timeout` seconds (`proc` reaped: no zombie)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@contextmanager
def procfile_web(base_env: dict[str, str], tmp_path: Path,
                 poll: float = 0.05) -> Iterator[tuple[subprocess.Popen, int]]:
    """The Procfile's web line through `sh -c` on a free port, in its own process group, once its port is open
    (looked at every `poll` seconds); killed if left over."""
    config = tmp_path / "config"
    config.mkdir(exist_ok=True)
    (config / "jobs.yml").write_text("- name: hello\n  triggers: [hello.world]\n  command: echo hello\n")
    port = free_port()
    env = dict(base_env, PORT=str(port), ANGORA_CONFIG=str(config),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    with (tmp_path / "web.log").open("wb") as log:
        proc = subprocess.Popen(["sh", "-c", web_line()], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert proc.poll() is None, (tmp_path / "web.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the web server did not listen within 60 s"
            time.sleep(poll)
        yield proc, port
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def sigterm_all(procs: Iterable[subprocess.Popen], timeout: float = 15.0) -> list[subprocess.Popen]:
    """SIGTERM every process still running, give each `timeout` s to end; return those that did not."""
    every = list(procs)
    for p in every:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    left = []
    for p in every:
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            left.append(p)
    return left


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll until predicate() is truthy (a bound against hangs, not a performance check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")


class System:
    """A matcher and workers as child processes on the test's own Redis db and key prefix."""

    def __init__(self, env: dict[str, str], config: Path, workdir: Path, cwd: Optional[Path] = None) -> None:
        self.env = dict(env, ANGORA_CONFIG=str(config))
        self.config = config
        self.workdir = workdir
        self.cwd = cwd  # where its processes start (`python -m` puts it first on their path)
        self.keys = Keys(env["ANGORA_PREFIX"])
        self.r = client_for(env["REDIS_URL"])  # redis+sentinel:// too
        self.q = Queries(self.r, self.keys)
        self.procs: dict[str, subprocess.Popen] = {}
        self._n = 0

    def start(self, role: str, *args: str, extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        """Start `angora <role> args...`; output goes to a file named after it."""
        return self.start_argv(role, [*CLI, role, *args], extra_env)

    def start_argv(self, role: str, argv: list[str], extra_env: Optional[dict[str, str]] = None) -> subprocess.Popen:
        """Start any command (e.g. a process built in tests/) with this system's environment, as `start` does."""
        self._n += 1
        name = f"{role}{self._n}"
        out = open(self.workdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, env=dict(self.env, **(extra_env or {})), cwd=self.cwd,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def send(self, topic: str, params: Optional[dict[str, str]] = None, run_id: Optional[str] = None) -> str:
        """Send a root message; return its run id."""
        msg = Message.create(topic, params, run_id, origin="test")
        send(self.r, self.keys, msg)
        return msg.run_id

    def wait_run(self, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until the run has finished (nothing in flight) and return its view."""
        def finished() -> Optional[dict[str, Any]]:
            try:
                run = self.q.run(run_id)
            except Exception:
                return None
            return run if run["active"] == 0 and run["plan"]["jobs"] is not None and run["status"] not in (
                "running", "queued") else None
        return wait_for(finished, timeout, what=f"run {run_id} to finish ({self.logs()})")

    def executions(self, run_id: str) -> list[dict[str, Any]]:
        """Every execution of a run."""
        return self.q.run_executions(run_id)

    def said(self, text: str) -> int:
        """How many times the children's output says `text`."""
        return sum(path.read_text(errors="replace").count(text) for path in self.workdir.glob("*.log"))

    def logs(self) -> str:
        """The tail of every child's output, for assertion messages."""
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-1500:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM every child, then SIGKILL what is left."""
        for p in sigterm_all(self.procs.values()):
            p.kill()
            p.wait()

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run `angora args...` as a user does, with this system's environment; output captured as text."""
        return subprocess.run([*CLI, *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              cwd=self.cwd)


@contextlib.contextmanager
def running(env: dict[str, str], jobs: str, workdir: Path) -> Iterator[System]:
    """A System on the definitions `jobs` (YAML text) with a matcher and a worker started; stopped on the way out."""
    s = System(env, write_config(workdir / "config", jobs), workdir)
    s.start("matcher")
    s.start("worker")
    try:
        yield s
    finally:
        s.stop()


def named(raw: dict, names: type[Names]) -> dict[str, str]:
    """A Redis hash (raw reply) with each field of `names` (core/schema.py) under its Python name; other fields
    (a run's `s:<job>`...) as they are."""
    back = {v: k for k, v in names.fields().items()}
    return {back.get(k, k): v for k, v in to_str_dict(raw).items()}


def compact(r: redis.Redis, key: str) -> bool:
    """Whether Redis keeps `key` in its compact encoding: `ziplist` in Redis 6, `listpack` in Redis 7."""
    return r.object("encoding", key) in (b"ziplist", b"listpack")


def hash_as(r: redis.Redis, key: str, names: type[Names]) -> dict[str, str]:
    """`named` of the hash at `key`."""
    return named(r.hgetall(key), names)


def fields(r: redis.Redis, key: str) -> dict[str, str]:
    """An execution's, a run's or a job's stats hash with its fields under their Python names (any other hash
    decoded as it is); a run's execution count per job as `n:<job>`."""
    kind = key.split(":")[1] if ":" in key and not key.startswith("rq:") else ""
    names = {"exec": Exec, "run": Run, "job": JobStats}.get(kind)
    if names is None:
        return {k.decode(): v.decode(errors="replace") for k, v in r.hgetall(key).items()}
    out = hash_as(r, key, names)
    if names is Run:
        for k, v in list(out.items()):
            if k.startswith(Run.execution):
                out[f"n:{v}"] = str(int(out.get(f"n:{v}", 0)) + 1)
    return out


def events_heard(s: System) -> None:
    """Wait until the matcher has said which events have listeners, and every process's cached copy of it (read
    at most once a second, store/events.py) may have caught up: events published from then on reach them."""
    from angora_rq.store.events import REFRESH, Events

    wait_for(lambda: Events(s.r, s.keys).wanted(), what=f"the matcher to say who listens to events ({s.logs()})")
    time.sleep(REFRESH + 0.2)


Make = Callable[..., System]


@contextmanager
def systems(env: dict[str, str], tmp_path: Path) -> Iterator[Make]:
    """A factory: write definitions (`{tmp}` is tmp_path), start a matcher and N workers; all stopped on exit."""
    made: list[System] = []

    def make(yaml_text: str, workers: int = 1, worker_args: tuple[str, ...] = (), matcher: bool = True,
             extra_env: Optional[dict[str, str]] = None) -> System:
        cfg = write_config(tmp_path / "config", yaml_text.replace("{tmp}", str(tmp_path)))
        s = System(dict(env, **(extra_env or {})), cfg, tmp_path)
        if matcher:
            s.start("matcher")
        for _ in range(workers):
            s.start("worker", *worker_args)
        made.append(s)
        return s

    try:
        yield make
    finally:
        for s in made:
            s.stop()


def write_config(folder: Path, text: str, name: str = "jobs.yml") -> Path:
    """Write one definitions file (dedented) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(textwrap.dedent(text))
    return folder


def pid_alive(pid: int) -> bool:
    """True if a process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def escaping_script(tag: str) -> str:
    """A shell script whose processes leave its process group every way a command can, then waits.

    Each process runs `sleep <tag><n>` (`new_tag()`), so `sleepers(tag)` finds them: 1 a setsid child; 2 a setsid
    child whose parent has exited (re-parented); 3 a setsid child ignoring SIGTERM; 4 a group member ignoring
    SIGTERM; 5 a daemon (double fork, setsid) ignoring SIGTERM, with a child of its own; 6 a daemon by Python's
    os.fork and os.setsid; 0 the script's own child.
    """
    daemon = (f"import os; os.fork() and os._exit(0); os.setsid(); os.fork() and os._exit(0); "
              f"os.execvp('sleep', ['sleep', '{tag}6'])")
    return textwrap.dedent(f"""\
        setsid sleep {tag}1 &
        (setsid sleep {tag}2 &)
        setsid sh -c "trap '' TERM; sleep {tag}3" &
        (trap '' TERM; exec sleep {tag}4) &
        (setsid sh -c "trap '' TERM; sleep {tag}5 & wait" &)
        {sys.executable} -c "{daemon}"
        sleep {tag}0 &
        wait
        """)


def sleepers(tag: str) -> dict[str, int]:
    """Live processes running `sleep <tag><n>`: {n: pid}, from a scan of /proc."""
    found = {}
    prefix = f"sleep\0{tag}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read()
        except OSError:
            continue
        if argv.startswith(prefix) and pid_alive(int(entry)):
            found[argv[len(prefix):].rstrip(b"\0").decode()] = int(entry)
    return found


def new_tag() -> str:
    """A number no other test's sleepers use: `sleep <tag><n>` marks this test's processes."""
    return f"3001.{uuid.uuid4().int % 10**8:08d}"


def kill_sleepers(tag: str) -> None:
    """SIGKILL what a failed test left behind (by pid, from the scan)."""
    for pid in sleepers(tag).values():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


ESCAPERS = {str(n) for n in range(7)}


def python_cmd(code: str) -> str:
    """A YAML-safe argv list running a Python snippet with this interpreter."""
    import json

    return json.dumps([sys.executable, "-c", code])


__all__ = ["System", "Make", "systems", "events_heard", "running", "wait_for", "write_config", "named", "hash_as",
           "fields", "pid_alive", "python_cmd", "os", "escaping_script", "sleepers", "kill_sleepers", "ESCAPERS",
           "new_tag"]

"""The command runner on real processes: argv and env, output and tails, timeouts, kills, spawn errors."""
from __future__ import annotations

import os
import selectors
import signal
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from angora_rq.commands import runner
from angora_rq.core import command
from angora_rq.core.command import CommandSpec
from angora_rq.core.model import JobDef
from angora_testkit import kill_sleepers, new_tag, sleepers

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/home/someone", "SECRET": "s3cret"}
NASTY = {
    "semi": "; touch X", "subst": "$(touch X)", "tick": "`touch X`",
    "var": "${SECRET}", "opt": "--output=OUT", "space": "a b  *",
}


def spec(argv: list[str], tmp_path: Path, **kw: Any) -> CommandSpec:
    """A spec with a spool dir in tmp_path and a safety timeout."""
    kw.setdefault("timeout", 60)
    kw.setdefault("kill_grace", 0.5)
    return CommandSpec(argv=argv, env=kw.pop("env", ENV), spool_dir=str(tmp_path / "spool"), **kw)


def eventually(check: Callable[[], bool], within: float = 10.0) -> bool:
    """Poll `check` until true or `within` seconds have passed (a bound against hangs, not a timing test)."""
    until = time.monotonic() + within
    while time.monotonic() < until:
        if check():
            return True
        time.sleep(0.02)
    return check()


def gone(pid: int) -> bool:
    """True if no process `pid` exists, or only its zombie (it is dead; init has not reaped it yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


# -- argv and environment ------------------------------------------------------------------------------
def test_expand_argv_from_env_only_one_argument_each() -> None:
    env = {"HOME": "/home/me", "SPACED": "a b *"}
    argv = command.expand_argv(["ls", "$HOME/x", "${HOME}y", "$NOPE", "${NOPE}", "$", "*", "$SPACED"], env)
    assert argv == ["ls", "/home/me/x", "/home/mey", "$NOPE", "${NOPE}", "$", "*", "a b *"]
    assert command.expand_path("$HOME/logs/$(x)", env) == "/home/me/logs/$(x)"


def test_build_env_params_upper_cased_message_overrides_job() -> None:
    job = JobDef(name="j", triggers=("t",), command=("env",), env={"OUT": "$HOME/out", "N": "1"},
                 params={"day": "mon", "keep": "k"})
    base = {"HOME": "/h", "ANGORA_PARAM_LEAKED": "x", "N": "0"}
    env = command.build_env(base, job, {"day": "tue"}, {"ANGORA_JOB": "j"})
    assert env == {"HOME": "/h", "N": "1", "OUT": "/h/out", "ANGORA_PARAM_DAY": "tue",
                   "ANGORA_PARAM_KEEP": "k", "ANGORA_JOB": "j"}


def test_params_are_values_never_code_nor_argv(tmp_path: Path) -> None:
    job = JobDef(name="j", triggers=("t",), command=("env",), params={"opt": "default"})
    env = command.build_env(ENV, job, NASTY, {})
    argv = command.expand_argv(["printenv", "ANGORA_PARAM_SEMI", "$ANGORA_PARAM_OPT"], ENV)
    assert argv == ["printenv", "ANGORA_PARAM_SEMI", "$ANGORA_PARAM_OPT"]
    out = runner.run(spec(["env"], tmp_path, env=env, cwd=str(tmp_path)))
    assert out.ok
    for name, value in NASTY.items():
        assert f"ANGORA_PARAM_{name.upper()}={value}\n" in out.tail
    assert not (tmp_path / "X").exists() and not (tmp_path / "OUT").exists()


# -- exit codes and output -------------------------------------------------------------------------------
@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_codes(tmp_path: Path, code: int) -> None:
    out = runner.run(spec(["sh", "-c", f"exit {code}"], tmp_path))
    assert (out.exit_code, out.signal, out.reason, out.ok) == (code, None, "exit", code == 0)


def test_stdout_and_stderr_between_markers(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "j.log"
    out = runner.run(spec(["sh", "-c", "echo out; echo err >&2; printf last; exit 3"], tmp_path,
                          log_path=str(log), header="angora job=j execution=e1"))
    assert out.exit_code == 3 and out.tail == "out\nerr\nlast"
    lines = log.read_text().splitlines()
    assert lines[0].startswith("=== angora job=j execution=e1 started ") and lines[0].endswith("Z ===")
    assert lines[1:4] == ["out", "err", "last"]
    assert lines[4].startswith("=== angora job=j execution=e1 exited 3 after ") and "(exit)" in lines[4]
    assert len(lines) == 5


def test_big_output_tail_is_last_64k_and_runs_append(tmp_path: Path) -> None:
    log = tmp_path / "j.log"
    big = "head -c 200000 /dev/zero | tr '\\0' a; echo; echo ERR >&2"
    first = runner.run(spec(["sh", "-c", big], tmp_path, log_path=str(log)))
    assert len(first.tail.encode()) == runner.TAIL_LIMIT and first.tail.endswith("a\nERR\n")
    second = runner.run(spec(["sh", "-c", "echo second"], tmp_path, log_path=str(log)))
    assert second.tail == "second\n"
    text = log.read_text()
    assert text.count("a" * 200000) == 1 and text.count("=== angora ") == 4
    assert text.index("ERR") < text.index("second")


def test_executions_sharing_a_log_each_have_their_own_tail_and_block(tmp_path: Path) -> None:
    log = tmp_path / "j.log"
    script = "echo {0}1; sleep {1}; echo {0}2 >&2; sleep {1}; echo {0}3"
    first = runner.start(spec(["sh", "-c", script.format("a", 0.3)], tmp_path, log_path=str(log), header="A"))
    second = runner.start(spec(["sh", "-c", script.format("b", 0.1)], tmp_path, log_path=str(log), header="B"))
    try:
        assert eventually(lambda: first.read_tail() == "a1\n" and second.read_tail().startswith("b1\n"))
        a, b = first.wait(), second.wait()
    finally:
        first.close()
        second.close()
    assert (a.tail, b.tail) == ("a1\na2\na3\n", "b1\nb2\nb3\n")
    # Each execution's output is one block between its markers, appended when it ended.
    lines = log.read_text().splitlines()
    assert len(lines) == 10
    for block in (lines[:5], lines[5:]):
        name = block[0].split()[1]
        assert block[0].startswith(f"=== {name} started ") and block[4].startswith(f"=== {name} exited 0 after ")
        assert block[1:4] == [f"{name.lower()}{i}" for i in (1, 2, 3)]
    assert {lines[0].split()[1], lines[5].split()[1]} == {"A", "B"}


def test_spool_output_leaves_no_file(tmp_path: Path) -> None:
    out = runner.run(spec(["sh", "-c", "echo spooled"], tmp_path))
    assert out.tail == "spooled\n"
    assert list((tmp_path / "spool").iterdir()) == []


def test_read_tail_while_running(tmp_path: Path) -> None:
    cmd = runner.start(spec(["sh", "-c", "echo live; sleep 1000"], tmp_path, kill_grace=0.2))
    try:
        assert eventually(lambda: cmd.read_tail() == "live\n")
        cmd.kill()
        assert cmd.wait().reason == "killed"
    finally:
        cmd.close()


# -- timeouts and kills ------------------------------------------------------------------------------
def test_timeout_kills_grandchild(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    out = runner.run(spec(["sh", "-c", f"sleep 1000 & echo $! > {pidfile}; wait"], tmp_path, timeout=0.5))
    assert out.reason == "timeout" and not out.ok and out.signal == signal.SIGTERM
    assert eventually(lambda: gone(int(pidfile.read_text())))


def test_timeout_signals_the_processes_that_left_the_group(tmp_path: Path) -> None:
    """setsid children are in other groups and sessions: the timeout finds them in the leader's tree (a runner alone,
    not a subreaper: what outlives its parent goes to init, and a worker covers that, see test_worker.py)."""
    tag = new_tag()
    try:
        # The second sleep and the shell ignore SIGTERM: they get SIGKILL at the end of the grace.
        out = runner.run(spec(["sh", "-c", f"setsid sleep {tag}1 & trap '' TERM; setsid sleep {tag}2 & wait"],
                              tmp_path, timeout=0.5, kill_grace=0.3))
        assert out.reason == "timeout"
        assert eventually(lambda: not sleepers(tag))
    finally:
        kill_sleepers(tag)


def test_kill_then_sigkill_after_grace_when_term_ignored(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    cmd = runner.start(spec(["sh", "-c", f"trap '' TERM; sleep 1000 & echo $! > {pidfile}; wait"], tmp_path,
                            kill_grace=0.3))
    assert eventually(lambda: pidfile.exists() and pidfile.read_text().strip() != "")
    assert cmd.poll() is None and cmd.next_deadline() is not None
    cmd.kill()
    out = cmd.wait()
    cmd.close()
    assert (out.reason, out.signal, out.exit_code) == ("killed", signal.SIGKILL, None)
    assert eventually(lambda: gone(int(pidfile.read_text())))


def test_members_left_after_leader_exits_are_killed(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    log = tmp_path / "j.log"
    # The leader exits at once (by itself: ok) while a background member that ignores TERM would live on.
    out = runner.run(spec(["sh", "-c", f"(trap '' TERM; exec sleep 1000) & echo $! > {pidfile}"], tmp_path,
                          log_path=str(log)))
    assert out.ok
    assert eventually(lambda: gone(int(pidfile.read_text())))
    assert "killed leftover processes" in log.read_text()


def test_kill_after_exit_is_harmless(tmp_path: Path) -> None:
    cmd = runner.start(spec(["true"], tmp_path))
    out = cmd.wait()
    cmd.kill()
    assert cmd.poll() is out and out.ok and cmd.next_deadline() is None
    cmd.close()


# -- spawn errors ------------------------------------------------------------------------------------
def test_missing_command_is_127_not_an_exception(tmp_path: Path) -> None:
    log = tmp_path / "j.log"
    cmd = runner.start(spec(["no-such-command-angora"], tmp_path, log_path=str(log)))
    assert cmd.pid is None and cmd.pgid is None and cmd.next_deadline() is not None
    with pytest.raises(ValueError):
        cmd.fileno()
    out = cmd.poll()
    assert out is not None and (out.exit_code, out.reason, out.ok) == (127, "spawn_error", False)
    assert out.tail == "angora: cannot run 'no-such-command-angora': No such file or directory\n"
    assert out.tail in log.read_text() and "(spawn_error)" in log.read_text()


def test_not_executable_is_126(tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    out = runner.run(spec([str(script)], tmp_path))
    assert (out.exit_code, out.reason) == (126, "spawn_error") and "Permission denied" in out.tail


def test_bad_cwd_and_empty_argv_fail(tmp_path: Path) -> None:
    out = runner.run(spec(["true"], tmp_path, cwd=str(tmp_path / "nope")))
    assert out.reason == "spawn_error" and not out.ok and "cannot change to directory" in out.tail
    assert runner.run(spec([], tmp_path)).reason == "spawn_error"
    assert runner.run(spec(["echo", "nul\0"], tmp_path)).reason == "spawn_error"


def test_unwritable_log_dir_fails_cleanly(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    out = runner.run(spec(["true"], tmp_path, log_path=str(tmp_path / "file" / "j.log")))
    assert (out.exit_code, out.reason) == (126, "spawn_error") and "cannot open output" in out.tail


# -- many at once --------------------------------------------------------------------------------------
def run_many(n: int, in_flight: int, tmp_path: Path) -> list[runner.Outcome]:
    """Run `n` `true` commands, `in_flight` at a time, waiting on their pidfds (bench/bench_runner.py times this)."""
    sel = selectors.DefaultSelector()
    outcomes: list[runner.Outcome] = []
    started = 0
    while len(outcomes) < n:
        while started < n and len(sel.get_map()) < in_flight:
            cmd = runner.start(spec(["true"], tmp_path))
            sel.register(cmd.fileno(), selectors.EVENT_READ, cmd)
            started += 1
        for key, _ in sel.select(10):
            if (out := key.data.poll()) is not None:
                sel.unregister(key.fd)
                key.data.close()
                outcomes.append(out)
    return outcomes


def test_fifty_at_once_with_a_selector(tmp_path: Path) -> None:
    outcomes = run_many(50, 50, tmp_path)
    assert len(outcomes) == 50 and all(o.ok for o in outcomes)


# -- the two ways of starting (posix_spawn without cwd, Popen with it) give the command the same world ----------
def _child_view(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    """What a command (not Python: it would set its own SIGPIPE) sees: descriptors, ignored signals, session."""
    status = runner.run(spec(["cat", "/proc/self/status", "/proc/self/stat"], tmp_path, **kw))
    fds = runner.run(spec(["ls", "/proc/self/fd"], tmp_path, **kw))
    pwd = runner.run(spec(["pwd"], tmp_path, **kw))
    assert status.ok and fds.ok and pwd.ok, (status.tail, fds.tail, pwd.tail)
    ignored = int(status.tail.split("SigIgn:")[1].split()[0], 16)
    stat = status.tail.rsplit(")", 1)[1].split()  # state ppid pgrp session ...
    pid = int(status.tail.split("\nPid:")[1].split()[0])
    return {"sigpipe_ignored": bool(ignored & (1 << (signal.SIGPIPE - 1))),
            "leader": int(stat[2]) == int(stat[3]) == pid,
            "fds": sorted(int(f) for f in fds.tail.split()), "cwd": pwd.tail.strip()}


@pytest.fixture(params=["close_range", "scan"])
def fd_marking(request: Any, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways spawn.py marks the worker's descriptors close-on-exec: close_range(2) with CLOSE_RANGE_CLOEXEC
    (Linux 5.11), and the scan of /proc/self/fd where the kernel lacks it."""
    from angora_rq.commands import spawn

    if request.param == "scan":
        monkeypatch.setattr(spawn, "_close_range", False)
    elif not spawn._cloexec_above_2():
        pytest.skip("this kernel has no close_range with CLOSE_RANGE_CLOEXEC")
    return str(request.param)


@pytest.mark.parametrize("cwd", [None, "/"])
def test_spawned_command_gets_a_clean_process(tmp_path: Path, cwd: Any, fd_marking: str) -> None:
    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_r, True)  # a descriptor this process (the worker) holds, marked inheritable
    try:
        view = _child_view(tmp_path, cwd=cwd)
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    # Python itself ignores SIGPIPE at start; a command must get the default back (`yes | head` must end).
    assert view["sigpipe_ignored"] is False
    assert view["leader"] is True
    # 0-2, plus the one ls opened to read /proc/self/fd: nothing of the worker's leaks through.
    assert view["fds"][:3] == [0, 1, 2] and len(view["fds"]) == 4, view["fds"]
    if cwd:
        assert view["cwd"] == cwd


def test_commands_started_in_a_batch_inherit_nothing_either(tmp_path: Path, fd_marking: str) -> None:
    """spawn.batch() (a worker's claimed batch) scans for inheritable descriptors once, on entry."""
    from angora_rq.commands import spawn

    leaked_r, leaked_w = os.pipe()
    os.set_inheritable(leaked_r, True)
    try:
        with spawn.batch():
            view = _child_view(tmp_path)
    finally:
        os.close(leaked_r)
        os.close(leaked_w)
    assert view["fds"][:3] == [0, 1, 2] and len(view["fds"]) == 4, view["fds"]


def test_every_descriptor_above_2_is_marked_and_a_kernel_without_the_flag_falls_back_to_the_scan(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from angora_rq.commands import spawn

    calls: list[tuple[int, int, int]] = []

    def refused(first: int, last: int, flags: int) -> int:  # a kernel before 5.11: EINVAL for the flag
        calls.append((first, last, flags))
        return -1

    monkeypatch.setattr(spawn, "_close_range", refused)
    r, w = os.pipe()
    os.set_inheritable(r, True)
    os.set_inheritable(w, True)
    try:
        spawn._no_inherited_fds()
        assert calls == [(3, 0xFFFFFFFF, spawn.CLOSE_RANGE_CLOEXEC)]
        assert not os.get_inheritable(r) and not os.get_inheritable(w)  # the scan did it
        assert spawn._close_range is False  # and is used from now on, without asking the kernel again
        os.set_inheritable(r, True)
        spawn._no_inherited_fds()
        assert len(calls) == 1 and not os.get_inheritable(r)
    finally:
        os.close(r)
        os.close(w)
    monkeypatch.setattr(spawn, "_close_range", None)  # found afresh: the real one, where this kernel has it
    r, w = os.pipe()
    os.set_inheritable(r, True)
    std = [os.get_inheritable(fd) for fd in range(3)]
    try:
        if not spawn._cloexec_above_2():
            pytest.skip("this kernel has no close_range with CLOSE_RANGE_CLOEXEC")
        assert not os.get_inheritable(r)
        assert [os.get_inheritable(fd) for fd in range(3)] == std  # 0-2 are left as they are
    finally:
        os.close(r)
        os.close(w)


def test_without_libcs_close_range_the_raw_system_call_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A libc before glibc 2.34 has no close_range(): the system call is made by its number."""
    import ctypes
    import platform

    from angora_rq.commands import spawn

    monkeypatch.setattr(spawn, "_close_range", None)
    if not spawn._cloexec_above_2():  # libc's own call, where this libc has it
        pytest.skip("this kernel has no close_range with CLOSE_RANGE_CLOEXEC, or this libc no close_range")
    real = ctypes.CDLL

    class OldLibc:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._libc = real(*args, **kwargs)

        def __getattr__(self, name: str) -> Any:
            if name == "close_range":
                raise AttributeError(name)
            return getattr(self._libc, name)

    monkeypatch.setattr(ctypes, "CDLL", OldLibc)
    raw = spawn._find_close_range()
    if platform.machine() not in spawn.SYS_CLOSE_RANGE:
        assert raw is False  # its number is not known here: the scan is used
        return
    r, w = os.pipe()
    os.set_inheritable(r, True)
    try:
        assert raw(3, 0xFFFFFFFF, spawn.CLOSE_RANGE_CLOEXEC) == 0
        assert not os.get_inheritable(r)
    finally:
        os.close(r)
        os.close(w)


def test_path_is_searched_in_the_commands_environment(tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    tool = bindir / "angora-test-tool"
    tool.write_text("#!/bin/sh\necho from-tool\n")
    tool.chmod(0o755)
    out = runner.run(spec(["angora-test-tool"], tmp_path, env={**ENV, "PATH": f"{bindir}:{ENV['PATH']}"}))
    assert out.ok and out.tail == "from-tool\n"
    tool.chmod(0o644)  # found but not executable: like execvp, Permission denied (126), not "not found"
    out = runner.run(spec(["angora-test-tool"], tmp_path, env={**ENV, "PATH": f"{bindir}:{ENV['PATH']}"}))
    assert (out.exit_code, out.reason) == (126, "spawn_error") and "Permission denied" in out.tail

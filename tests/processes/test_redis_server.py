"""The embedded Redis launcher: persistence, TCP and unix socket, refusals, clean failures."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from angora_rq.core.errors import AngoraError
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.store.connection import ping


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    """Poll `predicate` until true or `timeout` (a bound against hangs, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_aof_keeps_data_across_restart(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    with RedisServer(data_dir=tmp_path / "data", unix_socket=sock) as server:
        assert server.url == f"unix://{sock}"
        client = redis.Redis.from_url(server.url)
        client.set("kept", "yes")
        client.xadd("stream", {"f": "v"})
        client.close()
    assert not ping(f"unix://{sock}")
    with RedisServer(data_dir=tmp_path / "data", unix_socket=sock) as again:
        client = redis.Redis.from_url(again.url)
        assert client.get("kept") == b"yes"
        assert client.xlen("stream") == 1
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.close()


def test_unix_socket_only_listens_on_no_tcp_port(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path, unix_socket=tmp_path / "r.sock") as server:
        client = redis.Redis.from_url(server.url)
        assert client.config_get("port")["port"] == "0"
        assert oct(os.stat(tmp_path / "r.sock").st_mode & 0o777) == "0o700"
        client.close()


def test_free_port(tmp_path: Path) -> None:
    port = free_port()
    with RedisServer(data_dir=tmp_path, port=port) as server:
        assert server.url == f"redis://127.0.0.1:{port}"
        assert ping(server.url)
        assert redis.Redis.from_url(server.url).config_get("bind")["bind"] == "127.0.0.1"


def test_bad_argument_raises_with_log_tail(tmp_path: Path) -> None:
    server = RedisServer(data_dir=tmp_path, port=free_port(), extra_args=("--no-such-directive", "1"))
    with pytest.raises(AngoraError) as info:
        server.start()
    assert "exited at start" in info.value.message
    assert "no-such-directive" in info.value.message  # redis-server names the bad line
    assert server.pid is None


def test_second_server_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path, unix_socket=tmp_path / "a.sock"):
        with pytest.raises(AngoraError, match="already running"):
            RedisServer(data_dir=tmp_path, unix_socket=tmp_path / "b.sock").start()


def test_live_server_on_the_socket_is_refused(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    with RedisServer(data_dir=tmp_path / "one", unix_socket=sock) as first:
        with pytest.raises(AngoraError, match="already answers"):
            RedisServer(data_dir=tmp_path / "two", unix_socket=sock).start()
        assert ping(first.url)  # the refusal left the running server alone


def test_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    sock = tmp_path / "r.sock"
    sock.write_text("left over by a crash")
    with RedisServer(data_dir=tmp_path, unix_socket=sock) as server:
        assert ping(server.url)


def test_socket_path_too_long_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AngoraError, match="too long"):
        RedisServer(data_dir=tmp_path, unix_socket=tmp_path / ("x" * 120)).start()


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    # A launcher killed with SIGKILL cannot stop Redis: the parent-death signal must.
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from angora_rq.processes.redis_server import RedisServer\n"
        "s = RedisServer(data_dir=Path(sys.argv[1]), unix_socket=Path(sys.argv[1]) / 'r.sock').start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    launcher = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout is not None
        redis_pid = int(launcher.stdout.readline())
        assert pid_alive(redis_pid)
    finally:
        launcher.send_signal(signal.SIGKILL)
        launcher.wait()
    assert wait_until(lambda: not pid_alive(redis_pid)), f"redis-server {redis_pid} outlived its parent"

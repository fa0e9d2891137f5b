"""Shared fixtures: a private redis-server per test session, a fresh db and key prefix per test."""
from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.processes.redis_server import RedisServer, find_redis_server, free_port
from tls_proxy import TlsProxy, make_certs

DATABASES = 256
_db_numbers = itertools.cycle(range(1, DATABASES))


# scripts/test's second pass sets it: the redis-server every test starts (this session's, the processes', `angora
# up`'s) must be of this major version, or that pass would run the first one's server again and prove nothing.
MAJOR_ENV = "ANGORA_TEST_REDIS_MAJOR"


def server_major(exe: str) -> str:
    """The major version a redis-server binary says it is ("" if it says none)."""
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"v=(\d+)\.", out)
    return found.group(1) if found else ""


def pytest_configure(config: pytest.Config) -> None:
    """Refuses to run when the redis-server the tests would start is not of the major version scripts/test asked
    for (ANGORA_TEST_REDIS_MAJOR)."""
    wanted = os.environ.get(MAJOR_ENV)
    if wanted:
        exe = find_redis_server()
        got = server_major(exe)
        if got != wanted:
            raise pytest.UsageError(f"{MAJOR_ENV}={wanted}, but {exe} is Redis {got or '(of no version it says)'}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server this test session starts on a free loopback port, in a temp dir."""
    server = RedisServer(
        data_dir=tmp_path_factory.mktemp("redis"),
        port=free_port(),
        appendonly=False,
        extra_args=("--databases", str(DATABASES)),
    ).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of an empty database of the session's server, for this test alone."""
    db = next(_db_numbers)
    url = f"{redis_server.url}/{db}"
    # FLUSHDB on a server this session started itself.
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def tls_proxy(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsProxy]:
    """TLS in front of the session's redis-server, as managed Redis serves it; its CA and certificate made now."""
    with TlsProxy(redis_server.port, make_certs(tmp_path_factory.mktemp("certs"))) as proxy:
        yield proxy


@pytest.fixture
def tls_url(redis_url: str, tls_proxy: TlsProxy) -> str:
    """rediss:// URL of this test's database through the TLS proxy (verification settings not included)."""
    return tls_proxy.url(int(redis_url.rsplit("/", 1)[1]))


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A client on this test's own database."""
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


@pytest.fixture
def keys() -> Keys:
    """A key prefix unique to this test."""
    return Keys(prefix=f"t{uuid.uuid4().hex[:8]}")


@pytest.fixture
def angora_env(redis_url: str, keys: Keys, tmp_path: Path) -> dict[str, str]:
    """Environment for Angora processes started by a test: its own Redis db, prefix and data dir."""
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        ANGORA_PREFIX=keys.prefix,
        ANGORA_DATA_DIR=str(tmp_path / "data"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("ANGORA_AUTH_TOKEN", None)
    return env


@pytest.fixture
def angora_exe() -> list[str]:
    """argv prefix that runs the installed `angora` CLI with this interpreter."""
    return [sys.executable, "-m", "angora_rq.cli"]

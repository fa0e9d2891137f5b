"""A Redis set up to lose accepted work: one that deletes keys once full (a maxmemory-policy other than
noeviction), or writes no AOF. The roles say so as they start; the status, the dashboard and /metrics show the
first (tests/web/test_web_api.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.redis_setup import eviction_warning, persistence_warning
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.store.bus import send
from angora_testkit import CLI


@pytest.fixture
def evicting(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, full at 16 MB, that then deletes the least recently used key."""
    server = RedisServer(data_dir=tmp_path / "redis", port=free_port(), appendonly=False,
                         extra_args=("--maxmemory", "16mb", "--maxmemory-policy", "allkeys-lru")).start()
    yield server
    server.stop()


def fill(r: redis.Redis) -> None:
    """Another application's cache: 30 MB in values of 1 KB, never refused."""
    with r.pipeline(transaction=False) as p:
        for i in range(30000):
            p.set(f"cache:{i}", b"x" * 1000)
        p.execute()


def test_an_evicting_redis_deletes_accepted_work_when_another_application_fills_it(evicting: RedisServer) -> None:
    """Why the warning: what such a Redis does to accepted messages (their stream and runs) once a cache sharing
    it fills it."""
    r, keys = redis.Redis(port=evicting.port), Keys("ev")
    for _ in range(500):
        send(r, keys, Message.create("a.b", {}, None, origin="test"), listened=False)
    ours = set(r.scan_iter(f"{keys.prefix}:*"))
    assert keys.stream().encode() in ours and len(ours) > 500
    fill(r)
    assert r.info("stats")["evicted_keys"] > 0
    gone = ours - set(r.scan_iter(f"{keys.prefix}:*"))
    assert len(gone) > 50, f"only {len(gone)} of {len(ours)} keys evicted"


def start_worker(server: RedisServer, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, REDIS_URL=server.url, ANGORA_PREFIX="ev", ANGORA_DATA_DIR=str(tmp_path / "data"),
               PYTHONUNBUFFERED="1")
    return subprocess.run([*CLI, "worker", "--burst"], env=env, capture_output=True, text=True, timeout=60)


def test_a_role_warns_as_it_starts_on_a_redis_that_can_lose_work_and_not_otherwise(evicting: RedisServer,
                                                                                  tmp_path: Path) -> None:
    r = redis.Redis(port=evicting.port)
    fill(r)  # full already: the warning counts what Redis has deleted
    out = start_worker(evicting, tmp_path)
    said = out.stdout + out.stderr
    assert out.returncode == 0, said
    assert "WARNING angora_rq.cli: Redis' maxmemory-policy is allkeys-lru" in said and "set it to noeviction" in said
    assert "it has evicted" in said
    assert "WARNING angora_rq.cli: Redis writes no append-only file (appendonly no)" in said
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "0")  # full under noeviction, Redis would refuse the worker's writes (other warnings)
    r.config_set("appendonly", "yes")
    out = start_worker(evicting, tmp_path)
    said = out.stdout + out.stderr
    assert out.returncode == 0 and "WARNING" not in said, said


def test_what_each_setup_warning_says() -> None:
    assert eviction_warning("noeviction") is None and eviction_warning("") is None
    assert "accepted messages, runs, queues" in (eviction_warning("allkeys-random") or "")
    assert "heartbeats, leases, idempotency keys" in (eviction_warning("volatile-ttl") or "")
    assert persistence_warning(True) is None and "appendfsync everysec" in (persistence_warning(False) or "")

"""A Redis that comes back without Angora's data (here: restarted without persistence) is said so, once, by the
first role to reach it, and counted for /metrics and the dashboard; one that comes back with it is not."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import redis
from flask import Flask

from angora_rq.core.errors import Unavailable
from angora_rq.core.settings import Settings
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_rq.web import create_app
from angora_testkit import DATA_LOST, System, wait_for, write_config

JOBS = "- {name: a, triggers: [dl.a], command: 'true'}\n"


def server(tmp_path: Path, appendonly: bool) -> RedisServer:
    return RedisServer(data_dir=tmp_path / "redis", port=free_port(), appendonly=appendonly).start()


@pytest.fixture(params=[False, True], ids=["no-aof", "aof"])
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisServer]:
    s = server(tmp_path, request.param)
    yield s
    s.stop()


def run_once(s: System) -> bool:
    """Send a message and wait for its run; False when Redis does not answer yet."""
    try:
        s.wait_run(s.send("dl.a"))
        return True
    except Unavailable:
        return False


def test_a_redis_back_without_the_data_is_said_once_and_counted(own_redis: RedisServer, angora_env: dict[str, str],
                                                                tmp_path: Path) -> None:
    env = dict(angora_env, REDIS_URL=own_redis.url)
    s = System(env, write_config(tmp_path / "config", JOBS), tmp_path)
    try:
        for role in ("matcher", "matcher", "worker", "worker"):
            s.start(role)
        s.wait_run(s.send("dl.a"))
        wait_for(lambda: s.said("jobs, version") == 2 and s.said("queues default") == 2, 30,
                 what=f"every role started ({s.logs()})")
        own_redis.kill()
        own_redis.start()  # from its AOF when it has one; empty otherwise
        wait_for(lambda: run_once(s), 60, what=f"a run after the restart ({s.logs()})")
        # Each role checks the data as its outage ends, right after it logs that Redis is back.
        wait_for(lambda: s.said("Redis is back after") >= 4, 30, what=f"every role back ({s.logs()})")
        if not own_redis.appendonly:
            wait_for(lambda: s.said(DATA_LOST) >= 1, 30, what=f"a role to say the data was lost ({s.logs()})")
        app: Flask = create_app({"SETTINGS": Settings.from_env(env), "TESTING": True})
        client = app.test_client()
        status = client.get("/api/v1/status").get_json()["data_lost"]
        html = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
        metrics = client.get("/metrics").get_data(as_text=True)
        if own_redis.appendonly:
            assert s.said(DATA_LOST) == 0 and status == {"times": 0, "last": None}, s.logs()
            assert 'id="data-lost"' not in html and "\nangora_redis_data_lost_total 0.0\n" in metrics
        else:
            assert s.said(DATA_LOST) == 1, s.logs()  # one role of the four: the first to mark the data again
            assert status["times"] == 1 and status["last"] is not None
            assert 'id="data-lost"' in html and "\nangora_redis_data_lost_total 1.0\n" in metrics
        assert redis.Redis.from_url(own_redis.url).exists(s.keys.schema())
    finally:
        s.stop()

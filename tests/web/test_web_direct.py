"""/send dispatching a fresh run's root message itself (web/send.py direct_jobs, store/dispatch.submit_direct) when
its definitions are the version the matchers run; the stream and a matcher otherwise. Real redis-server, no
matcher running."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message
from angora_rq.core.model import Config, JobDef
from angora_rq.core.schema import Exec, Run
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.processes.worker import AngoraWorker
from angora_rq.store.versions import publish_running_version
from angora_rq.web import create_app
from angora_rq.core.pressure import Burst
from angora_rq.web import send as web_send
from angora_rq.web.send import direct_jobs

JOBS = """\
- {name: go, triggers: [t.go], command: 'echo hi'}
- {name: joined, triggers: [t.join], command: 'true', parent_success: true}
"""


@pytest.fixture(autouse=True)
def no_burst(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no recent sends in this process (web/send.py's BURST is per process)."""
    monkeypatch.setattr(web_send, "BURST", Burst())


@pytest.fixture
def settings(redis_url: str, keys: Keys, tmp_path: Path) -> Settings:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "jobs.yml").write_text(JOBS)
    return Settings(redis_url=redis_url, prefix=keys.prefix, config_path=folder, data_dir=tmp_path / "data")


def app_with_matchers_on(settings: Settings, r: redis.Redis, keys: Keys, version: str = "") -> Flask:
    """The app, with the matchers said to run `version` (default: the app's own)."""
    app = create_app({"SETTINGS": settings, "TESTING": True})
    publish_running_version(r, keys, version or app.extensions["angora"].definitions.snapshot().version)
    return app


def execs(r: redis.Redis, keys: Keys) -> list[str]:
    return [k.decode()[len(keys.execution("")):] for k in r.keys(keys.execution("*"))]


def test_a_send_runs_its_job_with_no_matcher(settings: Settings, r: redis.Redis, keys: Keys) -> None:
    resp = app_with_matchers_on(settings, r, keys).test_client().post("/send", data={"msg": "t.go"})
    assert resp.status_code == 202
    body = resp.get_json()
    assert body["message_id"] == "direct:" + body["run_id"] and not r.exists(keys.stream())
    [xid] = execs(r, keys)
    assert r.lrange(keys.rq_queue("default"), 0, -1) == [xid.encode()]
    worker = AngoraWorker(r, keys, settings, concurrency=1, name="w1")
    worker.start()
    try:
        deadline = time.monotonic() + 30  # a bound against hangs, not a timing test
        while r.hget(keys.execution(xid), Exec.status) != b"succeeded":
            assert time.monotonic() < deadline
            worker.step(max_wait=0.05)
    finally:
        worker.close()
    run: Any = r.hgetall(keys.run(body["run_id"]))
    assert run[Run.active.encode()] == b"0" and run[(Run.job_status + "go").encode()] == b"succeeded"
    assert r.get(keys.work()) == b"0"


@pytest.mark.parametrize("send", [{"msg": "t.go", "_version": "other"}, {"msg": "t.join"},
                                  {"msg": "t.go", "run_id": "r1"}, {"msg": "t.nobody"}],
                         ids=["another version", "parent_success", "existing run", "no job"])
def test_otherwise_the_message_goes_on_the_stream(settings: Settings, r: redis.Redis, keys: Keys,
                                                  send: dict[str, str]) -> None:
    data = dict(send)
    app = app_with_matchers_on(settings, r, keys, data.pop("_version", ""))
    body = app.test_client().post("/api/v1/messages", json=data).get_json()
    [(entry, fields)] = r.xrange(keys.stream())
    assert body["message_id"] == entry.decode() and fields[b"t"] == data["msg"].encode()
    assert execs(r, keys) == []


def test_a_burst_of_sends_goes_on_the_stream_for_the_matchers_batches(settings: Settings, r: redis.Redis,
                                                                      keys: Keys) -> None:
    web_send.BURST = Burst(count=2, window=3600.0)  # any third send within the hour is in a burst
    client = app_with_matchers_on(settings, r, keys).test_client()
    bodies = [client.post("/send", data={"msg": "t.go"}).get_json() for _ in range(3)]
    assert [b["message_id"].startswith("direct:") for b in bodies] == [True, True, False]
    assert len(r.xrange(keys.stream())) == 1


def test_no_direct_dispatch_without_the_matchers_version_or_for_events() -> None:
    snap = Snapshot(Config(jobs=(JobDef("go", ("t.go",), ("true",)),), version="v1"))
    assert [j.name for j in direct_jobs(snap, Message.create("t.go"))] == ["go"]
    assert direct_jobs(None, Message.create("t.go")) == []
    assert direct_jobs(snap, Message.create("t.go", run_id="r1")) == []
    assert direct_jobs(Snapshot(Config(jobs=(JobDef("ev", ("angora.run.failed",), ("true",)),), version="v1")),
                       Message.create("angora.run.failed")) == []

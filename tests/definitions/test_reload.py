"""Hot reload: when a process reloads (signal, request in Redis, files changed), and end to end: a reload under
load matches every message against one whole version, and a broken reload leaves the old definitions running."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from angora_rq.core.keys import Keys
from angora_rq.definitions.reload import Reloader, fingerprint
from angora_rq.store.reloads import reload_requests, request_reload


@dataclass
class FakeSource:
    """A ConfigSource stand-in counting reloads."""

    path: Path
    reloads: int = 0
    version: str = "v1"
    errors: list = field(default_factory=list)

    def current(self) -> Any:
        return self

    def reload(self) -> tuple[bool, list]:
        self.reloads += 1
        return False, self.errors


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def make(r: redis.Redis, keys: Keys, tmp_path: Path) -> tuple[Reloader, FakeSource, Clock]:
    """A Reloader past its first check, as in a process's first loop iteration."""
    (tmp_path / "jobs.yml").write_text("[]\n")
    source, clock = FakeSource(tmp_path), Clock()
    rl = Reloader(reload_requests(r, keys), source, check_every=1.0, watch_every=2.0, clock=clock)
    rl.check()
    return rl, source, clock


def test_building_a_reloader_reads_no_counter_and_its_first_check_only_remembers_it(tmp_path: Path) -> None:
    reads: list[int] = []

    def requests() -> str:  # any callable will do (the store's reads Redis): here a counter that always moved
        reads.append(1)
        return str(len(reads))

    (tmp_path / "jobs.yml").write_text("[]\n")
    src, clock = FakeSource(tmp_path), Clock()
    rl = Reloader(requests, src, clock=clock)
    assert reads == []
    assert rl.check() is False and len(reads) == 1 and src.reloads == 0
    rl.check()
    assert len(reads) == 1  # at most one look a second
    clock.t += 1.0
    rl.check()
    assert len(reads) == 2 and src.reloads == 1


def test_nothing_changed_nothing_reloaded(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    request_reload(r, keys)  # before the process started: already in what it loaded
    rl, src, clock = make(r, keys, tmp_path)
    for _ in range(10):
        clock.t += 0.7
        rl.check()
    assert src.reloads == 0


def test_sighup_reloads_at_the_next_check(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    rl, src, _ = make(r, keys, tmp_path)
    rl.request()
    assert rl.current() is src
    assert src.reloads == 1
    rl.check()
    assert src.reloads == 1


def test_a_request_in_redis_reaches_every_process_within_a_second(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (a, src_a, clock), (b, src_b, _) = make(r, keys, tmp_path / "a"), make(r, keys, tmp_path / "b")
    b.clock = clock
    assert request_reload(r, keys) == 1
    a.check()
    b.check()
    assert (src_a.reloads, src_b.reloads) == (0, 0)  # at most one HGET a second
    clock.t += 1.0
    a.check()
    b.check()
    assert (src_a.reloads, src_b.reloads) == (1, 1)
    clock.t += 1.0
    a.check()
    assert src_a.reloads == 1


def test_changed_files_are_noticed(r: redis.Redis, keys: Keys, tmp_path: Path) -> None:
    rl, src, clock = make(r, keys, tmp_path)
    before = fingerprint(tmp_path)
    (tmp_path / "more.yml").write_text("[]\n")
    assert fingerprint(tmp_path) != before
    clock.t += 1.0
    rl.check()
    assert src.reloads == 0  # files are looked at every 2 s
    clock.t += 1.0
    rl.check()
    assert src.reloads == 1
    os.utime(tmp_path / "more.yml", ns=(1, 1))
    clock.t += 2.0
    rl.check()
    assert src.reloads == 2


def test_redis_down_is_not_fatal(keys: Keys, tmp_path: Path) -> None:
    class Dead:
        def hget(self, *_: Any) -> None:
            raise redis.exceptions.ConnectionError("Redis is down")

    dead: Any = Dead()
    (tmp_path / "jobs.yml").write_text("[]\n")
    src, clock = FakeSource(tmp_path), Clock()
    rl = Reloader(reload_requests(dead, keys), src, clock=clock)
    clock.t += 5
    assert rl.check() is False



def test_the_web_app_reloads_through_a_reloader_as_every_process_does(redis_url: str, r: redis.Redis, keys: Keys,
                                                                     tmp_path: Path) -> None:
    import time

    from angora_rq.core.settings import Settings
    from angora_rq.definitions.load import validate
    from angora_rq.web import create_app

    cfg = tmp_path / "config"
    cfg.mkdir()
    path = cfg / "jobs.yml"
    path.write_text(V1)
    app = create_app({"SETTINGS": Settings(redis_url=redis_url, prefix=keys.prefix, config_path=cfg,
                                           data_dir=tmp_path / "data")})
    defs, client = app.extensions["angora"].definitions, app.test_client()
    assert isinstance(defs.reloader, Reloader) and defs.source is defs.reloader.source
    v1 = client.get("/api/v1/config").get_json()["version"]
    # V2 is as long as V1; with the mtime put back, the files look unchanged: only a request can show them.
    st = path.stat()
    path.write_text(V2)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    config, _ = validate(cfg)
    assert config is not None and len(V1) == len(V2) and config.version != v1
    v2 = config.version
    defs.reloader.clock = lambda: time.monotonic() + 60  # long enough for the counter and the files to be looked at
    assert client.get("/api/v1/config").get_json()["version"] == v1
    request_reload(r, keys)
    defs.reloader.clock = lambda: time.monotonic() + 120
    assert client.get("/api/v1/config").get_json()["version"] == v2

# -- end to end: a matcher under load, two versions, then a broken file ------------------------------------

V1 = """
- {name: a, triggers: [ev.load], command: "true"}
- {name: both, triggers: [ev.load], command: "true"}
"""
V2 = """
- {name: b, triggers: [ev.load], command: "true"}
- {name: both, triggers: [ev.load], command: "true"}
"""
BROKEN = V2 + """
- name: c
  trigers: [ev.load]
  command: "true"
"""


def put(folder: Path, text: str) -> str:
    """Replace the definitions atomically (as an editor or a deploy should) and return their version."""
    from angora_rq.definitions.load import validate

    tmp = folder.parent / "jobs.yml.new"
    tmp.write_text(text)
    os.replace(tmp, folder / "jobs.yml")
    config, _ = validate(folder)
    return config.version if config else ""


def test_reload_under_load_switches_whole_versions_and_a_broken_file_changes_nothing(
        angora_env: dict[str, str], tmp_path: Path, r: redis.Redis, keys: Keys, redis_url: str) -> None:
    import signal
    import subprocess
    import sys
    import threading
    import time

    from angora_rq.core.settings import Settings
    from angora_rq.web import create_app
    from angora_testkit import System, wait_for

    cfg = tmp_path / "config"
    cfg.mkdir()
    v1 = put(cfg, V1)
    s = System(angora_env, cfg, tmp_path)
    sent: list[str] = []
    app = create_app({"SETTINGS": Settings(redis_url=redis_url, prefix=keys.prefix, config_path=cfg,
                                           data_dir=tmp_path / "data")})

    def sender(n: int) -> None:
        for i in range(n):
            sent.append(s.send("ev.load", {"N": str(i)}))
            time.sleep(0.01)

    try:
        matcher = s.start("matcher")
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        t = threading.Thread(target=sender, args=(300,))
        t.start()
        wait_for(lambda: len(sent) >= 100, 30)
        s.wait_run(sent[0], 30)  # the matcher is up and matching with v1
        v2 = put(cfg, V2)
        reload = subprocess.run([sys.executable, "-m", "angora_rq.cli", "reload"], env=s.env, capture_output=True,
                                text=True, timeout=60)
        assert reload.returncode == 0 and v2 in reload.stdout, reload.stderr
        api = app.test_client().post("/api/v1/config/reload").get_json()
        assert api["requested"] == 2 and api["config"]["version"] == v2 and api["config"]["valid"] is True
        t.join()
        for run_id in sent:
            s.wait_run(run_id, 60)
        by_run = {run_id: s.executions(run_id) for run_id in sent}

        # A broken file: refused by `angora reload`, by SIGHUP, by the file watch and by the web app.
        put(cfg, BROKEN)
        refused = subprocess.run([sys.executable, "-m", "angora_rq.cli", "reload"], env=s.env, capture_output=True,
                                 text=True, timeout=60)
        assert refused.returncode == 1 and "jobs.yml:" in refused.stderr and "trigers" in refused.stderr
        matcher.send_signal(signal.SIGHUP)
        wait_for(lambda: "stays in force" in s.logs(), 10, what="the matcher to refuse the broken files")
        status = app.test_client().post("/api/v1/config/reload").get_json()["config"]
        assert status["valid"] is False and status["version"] == v2
        assert any("trigers" in e["message"] for e in status["errors"])
        after = [s.send("ev.load", {"N": f"late{i}"}) for i in range(10)]
        for run_id in after:
            s.wait_run(run_id, 60)
        late = [e for run_id in after for e in s.executions(run_id)]
    finally:
        s.stop()

    jobs_of = {v1: {"a", "both"}, v2: {"b", "both"}}
    seen = set()
    for run_id, executions in by_run.items():
        versions = {e["config_version"] for e in executions}
        assert len(versions) == 1, f"run {run_id} was matched against more than one version: {executions}"
        (version,) = versions
        assert version in jobs_of
        assert sorted(e["job"] for e in executions) == sorted(jobs_of[version])  # the whole version, once each
        assert all(e["status"] == "succeeded" for e in executions)
        seen.add(version)
    assert seen == {v1, v2}
    assert {(e["config_version"], e["job"]) for e in late} == {(v2, "b"), (v2, "both")} and len(late) == 20

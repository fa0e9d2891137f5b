"""Hot reload: when a process reloads (signal, request in Redis, files changed), and end to end: a reload under
load matches every message against one whole version, and a broken reload leaves the old definitions running."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from angora_rq.keys import Keys
from angora_rq.reload import Reloader, fingerprint, request_reload


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
    (tmp_path / "jobs.yml").write_text("[]\n")
    source, clock = FakeSource(tmp_path), Clock()
    return Reloader(r, keys, source, check_every=1.0, watch_every=2.0, clock=clock), source, clock


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
    rl = Reloader(dead, keys, src, clock=clock)
    clock.t += 5
    assert rl.check() is False

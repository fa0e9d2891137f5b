"""Two deployments with different ANGORA_PREFIX on one Redis database, both busy (matcher, workers, scheduler):
neither reads the other's work nor writes the other's keys, RQ's included, and nothing is lost."""
from __future__ import annotations

import uuid
from pathlib import Path
from typing import Optional

import redis

from angora_testkit import System, wait_for, write_config
from angora_rq.core import keys as K
from angora_rq.core.keys import DEFAULT_PREFIX, Keys

JOBS = """\
- name: first
  triggers: [iso.go]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/first.txt']
  messages: [iso.next]
- name: second
  triggers: [iso.next]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/second.txt']
- name: flaky
  triggers: [iso.go]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/flaky.txt; [ "$ANGORA_ATTEMPT" -ge 2 ]']
  replay: 2
  replay_delay: 0.1
- name: narrow
  triggers: [iso.go]
  queue: other
  concurrency: 1
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/narrow.txt']
- name: ticker
  triggers: [iso.tick]
  command: 'true'
- schedule: beat
  every: 1
  message: iso.tick
"""
# RQ's keys named after a queue (queue, registries, the per-queue worker set), by their head.
QUEUE_HEADS = ("rq:queue:", "rq:wip:", "rq:finished:", "rq:failed:", "rq:workers:", "rq:deferred:", "rq:scheduled:",
               "rq:canceled:")


def deployment(name: str, prefix: str, env: dict[str, str], tmp_path: Path) -> System:
    root = tmp_path / name
    out = root / "out"
    out.mkdir(parents=True)
    config = write_config(root / "config", JOBS.format(out=out))
    return System(dict(env, ANGORA_PREFIX=prefix, ANGORA_DATA_DIR=str(root / "data")), config, root)


def start(s: System) -> None:
    s.start("matcher")
    s.start("worker", "-q", "default", "-q", "other", "-c", "4")
    s.start("worker", "-q", "default", "-q", "other", "-c", "4")
    s.start("scheduler")
    wait_for(lambda: s.r.scard(s.keys.workers()) == 2, 30, 0.05, f"workers of {s.keys.prefix} ({s.logs()})")


def settle(s: System) -> None:
    """Stop the scheduler, let every accepted message's work finish, stop everything."""
    for name, proc in s.procs.items():
        if name.startswith("scheduler"):
            proc.terminate()
            proc.wait(15)
    wait_for(lambda: int(s.r.get(s.keys.work()) or 0) == 0, 120, 0.1, f"{s.keys.prefix}'s work to end ({s.logs()})")
    s.stop()


def lines(s: System, name: str) -> list[str]:
    path = s.workdir / "out" / name
    return sorted(path.read_text().split()) if path.exists() else []


def owner(r: redis.Redis, key: str, deployments: list[Keys]) -> Optional[str]:
    """The prefix of the deployment a key belongs to; None for RQ's sets shared by every deployment."""
    for k in deployments:
        if key.startswith(f"{k.prefix}:"):
            return k.prefix
    head = next((h for h in QUEUE_HEADS if key.startswith(h)), None)
    if head is not None:
        [who] = [k.prefix for k in deployments if k.own_queue("rq:queue:" + key[len(head):])]
        return who
    if key.startswith("rq:job:"):
        [who] = [k.prefix for k in deployments if r.exists(k.execution(key[len("rq:job:"):]))]
        return who
    if key.startswith("rq:worker:"):
        queues = (r.hget(key, "queues") or b"").decode().split(",")
        [who] = {k.prefix for q in queues for k in deployments if k.own_queue("rq:queue:" + q)}
        return who
    assert key in (K.RQ_QUEUES, K.RQ_WORKERS), f"a key nobody owns: {key}"
    return None


def snapshot(r: redis.Redis, keys: list[str]) -> dict[str, bytes]:
    """Each key's serialized value (DUMP: type and content, not its TTL)."""
    return {k: r.dump(k) or b"" for k in keys}


def test_two_prefixes_on_one_database_keep_to_their_own_keys(angora_env: dict[str, str], tmp_path: Path) -> None:
    # The default prefix (RQ's plain queue names, as deployed so far) beside another one: the same job names,
    # topics and queues in both.
    a = deployment("a", DEFAULT_PREFIX, angora_env, tmp_path)
    b = deployment("b", f"t{uuid.uuid4().hex[:8]}", angora_env, tmp_path)
    both = [a, b]
    r = a.r
    try:
        for s in both:
            start(s)
        names = {s.keys.prefix: {x.decode() for x in s.r.smembers(s.keys.workers())} for s in both}
        runs: dict[str, list[str]] = {s.keys.prefix: [] for s in both}
        for _ in range(30):
            for s in both:
                runs[s.keys.prefix].append(s.send("iso.go"))
        for s in both:
            for run in runs[s.keys.prefix]:
                assert s.wait_run(run, timeout=120)["status"] == "succeeded"
            settle(s)

        # Nothing lost, nothing run twice, and each execution ran on a worker of its own deployment.
        for s in both:
            mine = sorted(runs[s.keys.prefix])
            assert lines(s, "first.txt") == lines(s, "second.txt") == lines(s, "narrow.txt") == mine
            assert lines(s, "flaky.txt") == sorted(mine * 2)
            for run in mine:
                for ex in s.executions(run):
                    assert ex["worker"] in names[s.keys.prefix], (s.keys.prefix, ex)
        # Every key belongs to one deployment; RQ's registries hold only their own deployment's executions.
        keys = [k.decode() for k in r.keys("*")]
        owners = {k: owner(r, k, [s.keys for s in both]) for k in keys}
        for s in both:
            k = s.keys
            for q in ("default", "other"):
                for registry in (k.rq_finished(q), k.rq_failed(q)):
                    assert all(r.exists(k.execution(x.decode())) for x in r.zrange(registry, 0, -1)), registry
            # Succeeded executions leave RQ at once (result_ttl=0); failed ones stay in their failed registry.
            assert r.zcard(k.rq_finished("default")) == 0 and r.zcard(k.rq_failed("default")) > 0
        queue_owners = [owner(r, q.decode(), [s.keys for s in both]) for q in r.smembers(K.RQ_QUEUES)]
        assert sorted(str(o) for o in queue_owners) == sorted([a.keys.prefix] * 2 + [b.keys.prefix] * 2)

        # Untouched: with `a` stopped, `b` busy again (a fresh matcher, workers whose janitors trim, the
        # scheduler) leaves every key of `a` exactly as it was.
        a_keys = sorted(k for k, who in owners.items() if who == a.keys.prefix)
        assert any(k.startswith("rq:") for k in a_keys)
        lasting = [k for k in a_keys if r.ttl(k) == -1 or r.ttl(k) > 3600]  # not heartbeats about to expire
        frozen = snapshot(r, lasting)
        b.procs.clear()
        start(b)
        again = [b.send("iso.go") for _ in range(10)]
        for run in again:
            assert b.wait_run(run, timeout=120)["status"] == "succeeded"
        settle(b)
        assert snapshot(r, lasting) == frozen
        now_a = {k.decode() for k in r.keys("*") if owner(r, k.decode(), [a.keys, b.keys]) == a.keys.prefix}
        assert now_a <= set(a_keys) and set(lasting) <= now_a
    finally:
        for s in both:
            s.stop()

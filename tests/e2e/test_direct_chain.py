"""Follow-up messages a worker dispatches itself (no matcher hop), through real matcher and worker processes."""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from angora_rq.core.schema import Defs, Metrics
from angora_testkit import Make, System, wait_for

CHAIN = """
    - {name: a, triggers: [go], command: "CMD_A", messages: [to.b]}
    - {name: b, triggers: [to.b], command: "true", messages: [to.c]}
    - {name: c, triggers: [to.c], command: "true"}
"""


def xadds(s: System) -> int:
    """XADD commands the test's Redis server has run (its own processes only write there meanwhile)."""
    return int(s.r.info("commandstats").get("cmdstat_xadd", {}).get("calls", 0))


def by_job(s: System, run: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for e in s.executions(run["run_id"]):
        out.setdefault(e["job"], []).append(e)
    return out


def test_a_chain_goes_worker_to_worker_once_per_step(system: Make) -> None:
    s = system(CHAIN.replace("CMD_A", "true"))
    before = xadds(s)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "succeeded", s.logs()
    assert {j: len(e) for j, e in by_job(s, run).items()} == {"a": 1, "b": 1, "c": 1}
    # Only the root message went through the stream; b and c were created in the transactions that recorded a, b.
    assert xadds(s) - before == 1
    counts = s.r.hgetall(s.keys.metrics())
    assert (counts[(Metrics.messages + "root").encode()], counts[(Metrics.messages + "job").encode()]) == (b"1", b"2")
    assert s.r.hexists(s.keys.definitions(by_job(s, run)["b"][0]["config_version"]), Defs.follow + "a")


def test_a_join_still_goes_through_the_matcher(system: Make) -> None:
    s = system("""
        - {name: a, triggers: [go], command: "true", messages: [p.1, p.2]}
        - {name: p1, triggers: [p.1], command: "true", messages: [done.1]}
        - {name: p2, triggers: [p.2], command: "true", messages: [done.2]}
        - {name: child, triggers: [done.1, done.2], command: "true", parent_success: true}
    """, workers=2)
    before = xadds(s)
    run = s.wait_run(s.send("go"))
    assert run["status"] == "succeeded", s.logs()
    assert {j: len(e) for j, e in by_job(s, run).items()} == {"a": 1, "p1": 1, "p2": 1, "child": 1}
    assert xadds(s) - before == 3  # the root, and done.1 and done.2 (a join reads the run: a matcher's part)


def test_a_worker_killed_before_recording_loses_no_step_and_runs_none_twice(system: Make, tmp_path: Path) -> None:
    """SIGKILL between the claim and FINISH: nothing of `a`'s end was written, so nothing was dispatched; the
    janitor replays `a`, and its second attempt's end dispatches `b` (once)."""
    s = system(CHAIN.replace('"CMD_A"', '["sh", "-c", "echo $$ >> {tmp}/pids; '
                                        'if [ \\"$ANGORA_ATTEMPT\\" = 1 ]; then sleep 1000; fi"]'))
    run_id = s.send("go")
    wait_for(lambda: (tmp_path / "pids").exists() and (tmp_path / "pids").read_text().strip(), 30, what="start")
    standby = s.start("worker")
    victim = next(p for n, p in s.procs.items() if n.startswith("worker") and p is not standby)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    run = s.wait_run(run_id, timeout=60)
    assert run["status"] == "succeeded", s.logs()
    jobs = by_job(s, run)
    assert sorted((e["attempt"], e["status"]) for e in jobs["a"]) == [(1, "failed"), (2, "succeeded")]
    assert (len(jobs["b"]), len(jobs["c"])) == (1, 1)
    assert jobs["b"][0]["origin"] == f"job:a:{next(e['id'] for e in jobs['a'] if e['attempt'] == 2)}"

"""Re-runs through real processes: a whole run again (a new run, the same root message and params) and a run's
failed jobs again (the same run; the jobs their failure held back, parent_success joins included, follow), from
the CLI, the API and the run page."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from angora_rq.core.settings import Settings
from angora_rq.web import create_app
from angora_testkit import System, fields, running, write_config

# `flaky` fails until the file `fixed` exists; `join` waits for both `first` and `flaky`.
JOBS = """
- {{name: first, triggers: [rr.go], command: "true", messages: [rr.first]}}
- {{name: flaky, triggers: [rr.first], command: [test, -e, "{fixed}"], replay: 0, messages: [rr.flaky]}}
- {{name: join, triggers: [rr.first, rr.flaky], command: "true", parent_success: true}}
- {{name: solo, triggers: [rr.solo], command: "true"}}
- {{name: slow, triggers: [rr.slow], command: [sleep, "30"]}}
"""


@pytest.fixture
def system(angora_env: dict[str, str], tmp_path: Path) -> Iterator[System]:
    with running(angora_env, JOBS.format(fixed=tmp_path / "fixed"), tmp_path) as s:
        yield s


def angora(s: System, *args: str) -> subprocess.CompletedProcess:
    return s.cli(*args)


def app_for(s: System) -> Flask:
    settings = Settings.from_env(s.env)
    return create_app({"SETTINGS": settings, "TESTING": True})


def job_statuses(run: dict[str, Any]) -> dict[str, str]:
    return {name: info["status"] for name, info in run["jobs"].items()}


def test_rerun_failed_starts_the_failed_job_again_and_its_join_follows(system: System, tmp_path: Path) -> None:
    run_id = system.send("rr.go", {"DAY": "mon"})
    run = system.wait_run(run_id)
    assert run["status"] == "failed"
    assert job_statuses(run) == {"first": "succeeded", "flaky": "failed", "join": "upstream_failed"}
    (tmp_path / "fixed").touch()
    out = angora(system, "rerun", run_id, "--failed", "--json")
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    [again] = answer["executions"]
    assert answer["run_id"] == run_id and again["job"] == "flaky"
    run = system.wait_run(run_id)
    assert run["status"] == "succeeded", system.logs()
    assert job_statuses(run) == {"first": "succeeded", "flaky": "succeeded", "join": "succeeded"}
    by_job: dict[str, list[dict[str, Any]]] = {}
    for ex in system.executions(run_id):
        by_job.setdefault(ex["job"], []).append(ex)
    assert [len(by_job[j]) for j in ("first", "flaky", "join")] == [1, 2, 1]  # first is not run again
    failed, rerun = by_job["flaky"]
    assert (rerun["id"], rerun["attempt"], rerun["replay_of"], rerun["params"]) == (
        again["execution_id"], 2, failed["id"], {"DAY": "mon"})
    assert rerun["origin"] == f"rerun:{failed['id']}"
    nothing = angora(system, "rerun", run_id, "--failed")  # nothing failed any more
    assert nothing.returncode != 0 and "no failed" in nothing.stderr and "Traceback" not in nothing.stderr


def test_rerun_starts_a_new_run_of_the_same_message_and_params(system: System) -> None:
    run_id = system.send("rr.go", {"DAY": "tue"})
    old = system.wait_run(run_id)
    out = angora(system, "rerun", run_id)
    assert out.returncode == 0, out.stderr
    new_id = out.stdout.strip()
    assert new_id != run_id
    new = system.wait_run(new_id)
    assert (new["topic"], new["params"], new["plan"], new["rerun_of"]) == ("rr.go", {"DAY": "tue"}, old["plan"],
                                                                          run_id)
    assert new["origin"] == f"rerun:{run_id}" and old["rerun_of"] is None
    assert len(system.executions(run_id)) == 2  # the old run is left as it was


def test_a_run_started_by_hand_reruns_that_job_by_hand(system: System) -> None:
    out = angora(system, "run", "solo", "-p", "K=v")
    run_id = out.stdout.split()[0]
    system.wait_run(run_id)
    again = angora(system, "rerun", run_id, "--json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    new = system.wait_run(answer["run_id"])
    assert (new["origin"], new["params"], new["rerun_of"], list(new["jobs"])) == ("manual", {"K": "v"}, run_id,
                                                                                 ["solo"])
    assert [e["id"] for e in system.executions(answer["run_id"])] == [answer["execution_id"]]


def test_the_api_and_the_run_page(system: System) -> None:
    run_id = system.send("rr.go")
    system.wait_run(run_id)
    app = app_for(system)
    page = app.test_client().get(f"/runs/{run_id}").get_data(as_text=True)
    assert f'data-post="/api/v1/runs/{run_id}/rerun"' in page
    assert f'data-post="/api/v1/runs/{run_id}/rerun?failed=true"' in page
    assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", page)  # no inline script (CSP)
    client = app.test_client()  # a script's: no session cookie, so no CSRF token needed
    whole = client.post(f"/api/v1/runs/{run_id}/rerun")
    assert whole.status_code == 202 and whole.get_json()["rerun_of"] == run_id
    new_id = whole.get_json()["run_id"]
    new_page = app.test_client().get(f"/runs/{new_id}").get_data(as_text=True)
    assert f'href="/runs/{run_id}"' in new_page  # "Re-run of"
    failed = client.post(f"/api/v1/runs/{run_id}/rerun?failed=1")
    assert failed.status_code == 202 and [e["job"] for e in failed.get_json()["executions"]] == ["flaky"]
    assert client.post(f"/api/v1/runs/{run_id}/rerun?failed=maybe").status_code == 400
    assert client.post("/api/v1/runs/nope/rerun").status_code == 404
    assert client.post("/api/v1/runs/bad%20id/rerun?failed=true").status_code == 404
    system.wait_run(run_id)
    system.wait_run(new_id)


def test_a_canceled_run_reruns_its_canceled_and_killed_jobs(system: System) -> None:
    run_id = system.send("rr.slow")
    ex = _running(system, run_id)
    client = app_for(system).test_client()
    assert client.post(f"/api/v1/runs/{run_id}/cancel").status_code == 200
    assert client.post(f"/api/v1/executions/{ex}/kill").status_code == 200
    run = system.wait_run(run_id)
    assert run["status"] == "canceled" and job_statuses(run) == {"slow": "killed"}
    answer = client.post(f"/api/v1/runs/{run_id}/rerun?failed=true").get_json()
    assert [e["job"] for e in answer["executions"]] == ["slow"]
    again = _running(system, run_id, not_id=ex)  # the run is no longer canceled: the new attempt runs
    assert client.get(f"/api/v1/runs/{run_id}").get_json()["canceled"] is False
    twice = client.post(f"/api/v1/runs/{run_id}/rerun?failed=true")  # the re-run is still going
    assert twice.status_code == 409 and "still running" in twice.get_json()["error"]
    assert client.post(f"/api/v1/executions/{again}/kill").status_code == 200
    system.wait_run(run_id)


def _running(s: System, run_id: str, not_id: str = "") -> str:
    from angora_testkit import wait_for

    def running() -> str:
        return next((e["id"] for e in s.executions(run_id) if e["status"] == "running" and e["id"] != not_id), "")
    return wait_for(running, what=f"an execution of {run_id} running")


class Failed:
    """A command that exited 1 after 0.2 s (what finalize needs of an outcome)."""

    exit_code, signal, reason, started, ended, duration, tail, ok = 1, None, "exit 1", 1.0, 1.2, 0.2, "", False
    output = b""


def test_two_reruns_of_the_failed_jobs_at_once_start_them_once(redis_url: str, keys: Any, tmp_path: Path) -> None:
    import threading

    import redis

    from angora_rq.core.codec import to_str_dict
    from angora_rq.core.errors import Conflict
    from angora_rq.core.schema import Exec
    from angora_rq.store.state import load_claimed
    from angora_rq.definitions.source import ConfigSource
    from angora_rq.store.control import Control

    settings = Settings(redis_url=redis_url, prefix=keys.prefix)
    snap = ConfigSource(write_config(tmp_path / "config", JOBS.format(fixed="x"))).current()
    r = redis.Redis.from_url(redis_url)
    control = Control(r, keys, settings)
    started = control.run_job(snap, "solo")
    xid = started["execution_id"]
    ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
    with r.pipeline() as pipe:
        control.state.finalize(pipe, ex, Failed(), 2.0)  # replay: unlimited -> replaying, a replay is delayed
        pipe.execute()
    assert control.kill(r.hget(keys.execution(ex.id), Exec.next).decode()) == "killed"  # drop the replay
    outcomes: list[Any] = []
    gate = threading.Barrier(4)

    def rerun() -> None:
        gate.wait()
        try:
            outcomes.append(Control(redis.Redis.from_url(redis_url), keys, settings).rerun_failed(snap, ex.run))
        except Conflict as e:
            outcomes.append(e)

    threads = [threading.Thread(target=rerun) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done = [o for o in outcomes if isinstance(o, dict)]
    assert len(done) == 1 and len(done[0]["executions"]) == 1, outcomes
    assert fields(r, keys.run(ex.run))[f"n:{ex.spec.name}"] == "3"  # the attempt, its dropped replay, the re-run

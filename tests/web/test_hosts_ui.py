"""Which host ran each execution, its output and a refused late end: in the API and on the pages."""
from __future__ import annotations

import json
import time
from pathlib import Path

import redis

from angora_rq.commands.runner import Outcome
from angora_rq.core.codec import to_str_dict
from angora_rq.core.keys import Keys
from angora_rq.core.schema import Exec
from angora_rq.core.settings import Settings
from angora_rq.store.claiming import claim_call
from angora_rq.store.fence import note_late
from angora_rq.store.link import Link
from angora_rq.store.state import State, load_claimed
from angora_rq.web import create_app

WORKER = "rack-7.4242.ab12"
JOBS = """\
- name: extract
  triggers: [etl.start]
  command: [sh, -c, "echo extract"]
  log: /var/log/angora/
"""


def test_the_host_of_each_execution_its_output_and_a_late_end_show_everywhere(
        r: redis.Redis, redis_url: str, keys: Keys, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "jobs.yml").write_text(JOBS)
    settings = Settings(redis_url=redis_url, prefix=keys.prefix, config_path=tmp_path / "config",
                        data_dir=tmp_path / "data", host="rack-7")
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    started = client.post("/api/v1/jobs/extract/run", json={}).get_json()
    xid, run_id = started["execution_id"], started["run_id"]
    # Claimed on host rack-7 (ANGORA_HOST) by a worker named as workers name themselves (host.pid.random: the host
    # is not stored again, it is read from the name), finished there with its output; then the janitor's record
    # came first and the worker's own end arrived late.
    claim_call(keys, settings, WORKER, ("default",), time.time(), 1).run(Link(r))
    assert Exec.host not in to_str_dict(r.hgetall(keys.execution(xid)))
    ex = load_claimed(r, keys, xid, to_str_dict(r.hgetall(keys.execution(xid))))
    now = time.time()
    with r.pipeline() as pipe:
        State(keys, settings).finalize(pipe, ex, Outcome(0, None, "exit", now - 1, now, 1.0, "rows: 42\n"), now,
                                       worker=WORKER)
        pipe.execute()
    late = json.dumps({"worker": "rack-7.w2", "host": "rack-7", "reason": "fenced", "exit_code": None,
                       "signal": 15, "started": now - 9, "ended": now - 2})
    assert note_late(r, keys.execution(xid), late, "rack-7.w2", now - 2)
    assert not note_late(r, keys.execution(xid), late, WORKER, now)  # the end recorded is not late
    assert not note_late(r, keys.execution("gone"), late, "w", now) and not r.exists(keys.execution("gone"))

    api = client.get(f"/api/v1/executions/{xid}").get_json()
    assert (api["host"], api["worker"], api["tail"], api["late"]["reason"]) == ("rack-7", WORKER, "rows: 42\n",
                                                                                 "fenced")
    html = client.get(f"/executions/{xid}", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "rack-7" in html and "rows: 42" in html and 'id="ex-late"' in html and "/var/log/angora/" in html
    for url in (f"/runs/{run_id}", "/jobs/extract"):
        assert ">rack-7<" in client.get(url, headers={"Accept": "text/html"}).get_data(as_text=True), url

"""A message no matcher can dispatch, among good ones, through real processes: the good ones run, the bad one is
put aside and shown by the API and /metrics, and the matcher keeps going."""
from __future__ import annotations

import http.client

from angora_rq.core.schema import Entry
from angora_testkit import Make, wait_for
from test_pressure import get_json, start_web

JOBS = """\
- name: step
  triggers: [go]
  command: "true"
"""


def test_a_bad_entry_is_put_aside_and_the_others_run(system: Make) -> None:
    s = system(JOBS, extra_env={"ANGORA_CLAIM_IDLE": "1"})
    first = s.send("go")
    s.wait_run(first)  # the matcher works: a lone failure is then the entry's own
    bad = s.r.xadd(s.keys.stream(), {Entry.topic: "go", Entry.run: "bad-run", Entry.origin: "api",
                                     Entry.sent: "not a time"}).decode()
    runs = [s.send("go") for _ in range(5)]
    for run_id in runs:
        assert s.wait_run(run_id)["status"] == "succeeded"
    port = start_web(s)
    body = wait_for(lambda: (b := get_json(port, "/api/v1/rejected"))["total"] and b, 30,
                    what=f"the bad entry to be put aside ({s.logs()})")
    assert [x["entry"] for x in body["rejected"]] == [bad]
    assert "ValueError" in body["rejected"][0]["error"] and body["rejected"][0]["fields"][Entry.run] == "bad-run"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert "angora_messages_rejected_total 1.0" in text
    assert s.r.xpending(s.keys.stream(), "matchers")["pending"] == 0
    later = s.send("go")  # and the matcher goes on
    assert s.wait_run(later)["status"] == "succeeded"

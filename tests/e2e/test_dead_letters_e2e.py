"""A message no matcher can dispatch, among good ones, through real processes: the good ones run, the bad one is
put aside as a dead letter and shown by the API, the CLI and /metrics, and the matcher keeps going."""
from __future__ import annotations

import http.client
import json

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
    body = wait_for(lambda: (b := get_json(port, "/api/v1/dead-letters"))["total"] and b, 30,
                    what=f"the bad entry to be put aside ({s.logs()})")
    assert [x["entry"] for x in body["dead_letters"]] == [bad]
    letter = body["dead_letters"][0]
    assert "ValueError" in letter["error"] and letter["fields"][Entry.run] == "bad-run"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    assert "angora_messages_dead_lettered_total 1.0" in text
    assert s.r.xpending(s.keys.stream(), "matchers")["pending"] == 0
    listed = s.cli("dead-letters")
    assert listed.returncode == 0 and bad in listed.stdout and "ValueError" in listed.stdout, listed
    assert "1 kept (1 in all)" in listed.stdout
    as_json = json.loads(s.cli("dead-letters", "--json").stdout)
    assert as_json["total"] == 1 and as_json["dead_letters"][0]["entry"] == bad
    later = s.send("go")  # and the matcher goes on
    assert s.wait_run(later)["status"] == "succeeded"
    # Its topic and params were fine (its time field was not): sent again, it runs, and leaves the list.
    resent = s.cli("dead-letters", "--resend", bad)
    assert resent.returncode == 0, resent
    assert s.wait_run(resent.stdout.strip())["status"] == "succeeded"
    assert "no dead letters kept (1 in all)" in s.cli("dead-letters").stdout

"""Many clients at once against `angora web --workers 2` and real matcher and workers (chaos tier: long): every
request is answered 2xx, never 5xx, and every accepted message's workflow runs once. Two ways a web process ran out
of Redis connections and answered 503 were found only at 64 clients: a request thread that held its connection while
it waited for a second one (the API's auth check, then its reads), and /send's events read (bench/README.md, sixth
round)."""
from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from angora_testkit import System, listening, wait_for, write_config
from angora_rq.processes.redis_server import free_port

pytestmark = pytest.mark.chaos

TOKEN = "soak-" + "t" * 40
WORKFLOW = """\
- name: step_a
  triggers: [soak.go]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/a.txt']
  messages: [soak.b]
- name: step_b
  triggers: [soak.b]
  command: [sh, -c, 'echo "$ANGORA_RUN_ID" >> {out}/b.txt']
"""
CLIENTS = 64
# What the readers ask for: the API and the UI's pages, each a different mix of Redis reads.
READS = ("/api/v1/runs?limit=20", "/api/v1/status", "/api/v1/jobs", "/api/v1/schedules", "/", "/runs", "/jobs/step_a",
         "/workflows", "/schedules", "/metrics")


class Clients:
    """`CLIENTS` senders of /send and as many readers of the API and the UI's pages, each on its own keep-alive
    connection, all at once; tallies every answer (a client stops at its first error)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.accepted: list[str] = []
        self.errors: list[str] = []
        self.readers: list[int] = []
        self._lock = threading.Lock()

    def run(self, sends: int, reads: int) -> None:
        threads = [threading.Thread(target=self._send, args=(sends,)) for _ in range(CLIENTS)]
        threads += [threading.Thread(target=self._read, args=(reads,)) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _send(self, n: int) -> None:
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {TOKEN}"}
        self._loop(n, "POST", ["/send"], b"msg=soak.go", headers)

    def _read(self, n: int) -> None:
        with self._lock:
            start = len(self.readers)  # each reader goes round the pages from its own place
            self.readers.append(start)
        paths = [READS[(start + i) % len(READS)] for i in range(len(READS))]
        self._loop(n, "GET", paths, None, {"Authorization": f"Bearer {TOKEN}"})

    def _loop(self, n: int, method: str, paths: list[str], body: bytes | None, headers: dict[str, str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        path = paths[0]
        try:
            for i in range(n):
                path = paths[i % len(paths)]
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                with self._lock:
                    self.statuses[(method, resp.status)] += 1
                    if resp.status == 202:
                        self.accepted.append(json.loads(payload)["run_id"])
                    elif resp.status >= 300:
                        self.errors.append(f"{method} {path}: {resp.status} {payload[:200]!r}")
                if resp.status >= 300:
                    return  # one is enough (a pool that ran dry answers each request after its 10 s timeout)
        except OSError as e:
            with self._lock:
                self.errors.append(f"{method} {path}: {e!r}")
        finally:
            conn.close()


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_chaos_64_senders_and_64_readers_get_no_5xx_and_every_workflow_runs_once(
        angora_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    config = write_config(tmp_path / "config", WORKFLOW.format(out=out))
    s = System(dict(angora_env, ANGORA_AUTH_TOKEN=TOKEN), config, tmp_path)
    try:
        s.start("matcher")
        s.start("worker", "-c", "8")
        s.start("worker", "-c", "8")
        port = free_port()
        s.start("web", "--port", str(port), "--workers", "2")
        wait_for(lambda: listening(port), 60, 0.1, f"the web server on port {port} ({s.logs()})")
        clients = Clients(port)
        clients.run(sends=40, reads=40)
        assert not clients.errors, clients.errors[:5]
        assert clients.statuses == {("POST", 202): CLIENTS * 40, ("GET", 200): CLIENTS * 40}, clients.statuses
        accepted = sorted(clients.accepted)
        assert len(set(accepted)) == len(accepted)
        wait_for(lambda: len(lines(out / "b.txt")) >= len(accepted), 300, 0.2,
                 f"every accepted workflow to run ({s.logs()})")
        wait_for(lambda: int(s.r.get(s.keys.work()) or 0) == 0, 60, 0.1, "the work counter to come back to 0")
        # Once each: a step run twice would show as a repeated run id.
        assert sorted(lines(out / "a.txt")) == accepted and sorted(lines(out / "b.txt")) == accepted
    finally:
        s.stop()


"""Webhooks: events POSTed to a URL by the leading scheduler, signed, retried with backoff, logged."""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from angora_rq.core.events import wanted
from angora_rq.core.topics import TriggerIndex
from angora_rq.core.webhooks import Attempt, Delivery, backoff, sign
from angora_rq.definitions.load import validate
from angora_rq.web import create_app
from angora_rq.core.settings import Settings
from angora_testkit import Make, System, events_heard, wait_for, write_config


class Receiver:
    """An HTTP server on loopback that records each POST and answers with the next status of `answers`."""

    def __init__(self, answers: list[int]) -> None:
        self.answers = list(answers)
        self.got: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.got.append({"headers": dict(self.headers), "body": body, "path": self.path})
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])  # the first attempt fails: the second must come
    yield r
    r.close()



# -- pure ------------------------------------------------------------------------------------------------------

def test_signature_backoff_and_body() -> None:
    body = b'{"event":"angora.run.failed"}'
    assert sign("k", body) == "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert [backoff(n) for n in (1, 2, 3, 10, 20)] == [1.0, 2.0, 4.0, 300.0, 300.0]
    d = Delivery.of("h", {"event": "angora.run.failed", "run_id": "r1"})
    assert json.loads(d.body()) == {"event": "angora.run.failed", "run_id": "r1", "delivery": d.id}
    assert Delivery.from_json(d.again().to_json()) == Delivery(d.id, "h", d.event, 2)
    assert Attempt(204, "", 0.1).ok and not Attempt(500, "HTTP 500", 0.1).ok and not Attempt(None, "x", 0).ok


def test_webhook_definitions(tmp_path: Path) -> None:
    write_config(tmp_path, """\
        - webhook: chat
          url: https://hooks.example.com/x
          events: [angora.run.failed, angora.execution.*]
          secret: $HOOK_SECRET
          retries: 2
          timeout: 3s
    """)
    config, problems = validate(tmp_path)
    assert config is not None and problems == []
    (hook,) = config.webhooks
    assert (hook.name, hook.retries, hook.timeout, hook.secret) == ("chat", 2, 3.0, "$HOOK_SECRET")
    assert hook.to_json()["signed"] is True and "secret" not in hook.to_json()
    assert wanted(TriggerIndex([]), config.webhooks)["angora.execution.failed"] == "w"
    write_config(tmp_path, """\
        - webhook: bad
          url: ftp://x
          events: [run.failed, angora.run.faild]
          secrets: x
        - {webhook: bad, url: "http://x/", events: [angora.#]}
    """)
    _, problems = validate(tmp_path)
    texts = [str(p).removeprefix(f"{tmp_path}/jobs.yml:") for p in problems]
    assert texts == [
        "1:3: webhook 'bad': duplicate webhook name 'bad' (also defined at " f"{tmp_path}/jobs.yml:5:4)",
        "2:8: webhook 'bad': 'url' must be an http:// or https:// URL with a host, not 'ftp://x'",
        "3:12: webhook 'bad': event 'run.failed' is not an event: events are topics under 'angora.' "
        "(angora.run.failed, angora.execution.*, angora.#)",
        "3:24: webhook 'bad': event 'angora.run.faild' matches no event (did you mean 'angora.run.failed'?)",
        "4:3: webhook 'bad': unknown key 'secrets' (did you mean 'secret'?)",
        "5:4: webhook 'bad': duplicate webhook name 'bad' (also defined at " f"{tmp_path}/jobs.yml:1:3)"]


# -- through the real processes ---------------------------------------------------------------------------------

def deliveries(s: System, n: int) -> list[dict[str, Any]]:
    """The webhook 'chat''s log through the API once it has n attempts, oldest first."""
    client = create_app({"SETTINGS": Settings.from_env(s.env), "TESTING": True}).test_client()

    def enough() -> Any:
        hooks = client.get("/api/v1/webhooks").get_json()["webhooks"]
        return hooks and len(hooks[0]["deliveries"]) >= n and hooks[0]["deliveries"]
    return list(reversed(wait_for(enough, what=f"{n} webhook attempts ({s.logs()})")))


def test_a_failed_run_is_posted_signed_and_retried(system: Make, receiver: Receiver) -> None:
    s = system(f"""
        - {{name: build, triggers: [go], command: "false", replay: 0}}
        - webhook: chat
          url: {receiver.url}
          events: [angora.run.failed]
          secret: $HOOK_SECRET
          retries: 3
    """, extra_env={"HOOK_SECRET": "s3cret"})
    s.start("scheduler")
    events_heard(s)
    run_id = s.send("go")
    assert s.wait_run(run_id)["status"] == "failed"
    first, second = deliveries(s, 2)
    assert (first["outcome"], first["status"], first["attempt"]) == ("retrying", 500, 1)
    assert (second["outcome"], second["status"], second["attempt"]) == ("delivered", 200, 2)
    assert first["delivery"] == second["delivery"] and first["run_id"] == run_id
    assert second["time"] >= first["next"]  # the backoff was waited out
    assert len(receiver.got) == 2
    for got in receiver.got:
        body, headers = got["body"], got["headers"]
        assert headers["X-Angora-Signature"] == sign("s3cret", body)
        assert headers["X-Angora-Event"] == "angora.run.failed" and headers["X-Angora-Delivery"] == first["delivery"]
        event = json.loads(body)
        assert (event["event"], event["run_id"], event["status"], event["topic"]) == (
            "angora.run.failed", run_id, "failed", "go")
    # no job listens: the event went to the webhook only, it started no run
    assert [r["run_id"] for r in s.q.runs(limit=50)[1]] == [run_id]

    client = create_app({"SETTINGS": Settings.from_env(s.env), "TESTING": True}).test_client()
    html = client.get("/webhooks", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "<h2>chat</h2>" in html and "HTTP 500" in html and "delivered" in html and "s3cret" not in html


def test_a_receiver_that_never_answers_is_given_up_on(system: Make) -> None:
    s = system("""
        - {name: build, triggers: [go], command: "true"}
        - webhook: chat
          url: http://127.0.0.1:9/nobody
          events: [angora.run.succeeded]
          retries: 1
          timeout: 2s
    """)
    s.start("scheduler")
    events_heard(s)
    s.wait_run(s.send("go"))
    first, second = deliveries(s, 2)
    assert (first["outcome"], second["outcome"]) == ("retrying", "failed")
    assert first["status"] is None and "refused" in first["error"].lower()
    assert s.r.zcard(s.keys.webhook_due()) == 0

"""The Procfile's `web:` line, run the way a Procfile runner runs it (`sh -c`, $PORT): the production server."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import redis

from angora_rq.keys import Keys
from angora_rq.redis_server import free_port

PROCFILE = Path(__file__).resolve().parents[1] / "Procfile"


def web_line() -> str:
    """The command of the Procfile's web process."""
    return next(line for line in PROCFILE.read_text().splitlines() if line.startswith("web:"))[len("web:"):].strip()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def server(angora_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """The web process of the Procfile on a free port; its base URL. Stopped with SIGTERM, which must be clean."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "jobs.yml").write_text("- name: hello\n  triggers: [hello.world]\n  command: echo hello\n")
    port = free_port()
    env = dict(angora_env, PORT=str(port), ANGORA_CONFIG=str(config),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    log = (tmp_path / "web.log").open("wb")
    proc = subprocess.Popen(["sh", "-c", web_line()], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _listening(port):
            assert proc.poll() is None, (tmp_path / "web.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the web server did not listen within 60 s"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(30) in (0, -signal.SIGTERM, 128 + signal.SIGTERM)
        output = (tmp_path / "web.log").read_text()
        assert "Traceback" not in output, output[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def call(url: str, data: Optional[bytes] = None, headers: Optional[dict[str, str]] = None,
         method: Optional[str] = None) -> tuple[int, Any, bytes]:
    """(status, headers (case-insensitive), body) of one request; 4xx/5xx are answers too."""
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_procfile_web_serves_send_pages_and_dashboard(server: str, r: redis.Redis, keys: Keys) -> None:
    status, _, body = call(server + "/healthz")
    assert status == 200 and json.loads(body)["redis"]["ok"] is True

    status, head, body = call(server + "/send", b"msg=hello.world&param.WHO=you", FORM)
    assert status == 202 and head["Content-Type"] == "application/json" and head["Cache-Control"] == "no-store"
    sent = json.loads(body)
    [(_, fields)] = r.xrange(keys.stream(), sent["message_id"], sent["message_id"])
    assert fields[b"t"] == b"hello.world" and fields[b"r"] == sent["run_id"].encode() and fields[b"o"] == b"http"

    status, _, body = call(server + "/api/v1/messages", json.dumps({"msg": "hello.world", "run_id": "r-1"}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 202 and json.loads(body)["run_id"] == "r-1"

    for page in ("/", "/jobs/hello", "/rq/", "/static/angora.css"):
        status, _, body = call(server + page)
        assert status == 200 and body, page
    assert r.xlen(keys.stream()) == 2


@pytest.mark.parametrize("data,headers,status", [
    (b"msg=hello..world", FORM, 400),
    (b"msg=hello.world&color=red", FORM, 400),
    (b"{", {"Content-Type": "application/json"}, 400),
    (b"msg=hello.world&x=" + b"y" * (1024 * 1024), FORM, 413),
    (b"msg=hello.world", dict(FORM, Origin="http://evil.example"), 403),
])
def test_procfile_web_bad_requests_are_4xx_json(server: str, r: redis.Redis, keys: Keys, data: bytes,
                                                headers: dict[str, str], status: int) -> None:
    got, head, body = call(server + "/send", data, headers)
    assert got == status and head["Content-Type"] == "application/json", body[:300]
    assert json.loads(body)["error"]
    assert r.xlen(keys.stream()) == 0


def test_procfile_web_accepts_a_chunked_body(server: str, r: redis.Redis, keys: Keys) -> None:
    """curl -H 'Transfer-Encoding: chunked': no Content-Length, so the fast lane leaves it to Flask."""
    host, port = server.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"6\r\nmsg=he\r\n9\r\nllo.world\r\n0\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 202"), reply[:300]
    assert r.xlen(keys.stream()) == 1


def test_procfile_web_under_concurrent_scripts(server: str, r: redis.Redis, keys: Keys) -> None:
    """8 clients x 50 messages at once: every one accepted once, each with its own run."""
    answers: list[Any] = []

    def client() -> None:
        for _ in range(50):
            answers.append(call(server + "/send", b"msg=hello.world", FORM))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a[0] for a in answers] == [202] * 400
    assert len({json.loads(a[2])["run_id"] for a in answers}) == 400
    assert r.xlen(keys.stream()) == 400


def test_procfile_web_knows_its_own_origin(server: str) -> None:
    """rq-dashboard's buttons are accepted when the browser's Origin is this site: the server must pass the Host."""
    assert call(server + "/api/v1/jobs/hello/run", b"{}", {"Content-Type": "application/json"})[0] == 202
    evil, _, _ = call(server + "/rq/queue/default/compact", b"", {"Origin": "http://evil.example"}, method="POST")
    same, _, body = call(server + "/rq/queue/default/compact", b"", {"Origin": server}, method="POST")
    assert evil == 403
    assert same == 200 and json.loads(body)["status"] == "OK"

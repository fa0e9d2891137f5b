"""The Procfile's `web:` line, run the way a Procfile runner runs it (`sh -c`, $PORT): the production server."""
from __future__ import annotations

import http.cookiejar
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import redis

from angora_rq.core.keys import Keys
from angora_rq.processes.redis_server import RedisServer, free_port
from angora_testkit import group_gone, listening, procfile_web, web_line

@dataclass
class Web:
    """The module's one running web process: its base URL, and its Redis database and key prefix."""

    base: str
    r: redis.Redis
    keys: Keys

    def sent(self) -> int:
        """How many messages are on the stream so far."""
        return int(self.r.xlen(self.keys.stream()))


@pytest.fixture(scope="module")
def web(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    """The Procfile's web process, serving, shared by this module's tests (it starts in seconds, and a SIGTERM
    that meets a worker still starting costs the 5 s of --workers-kill-timeout); its own key prefix on db 0,
    which the per-test databases (1-255) never use. SIGTERM must then end every process of it, cleanly."""
    tmp_path = tmp_path_factory.mktemp("web")
    keys = Keys(prefix=f"t{uuid.uuid4().hex[:8]}")
    url = f"{redis_server.url}/0"
    env = dict(os.environ, REDIS_URL=url, ANGORA_PREFIX=keys.prefix, ANGORA_DATA_DIR=str(tmp_path / "data"),
               ANGORA_AUTH="off", ANGORA_RQ_DASHBOARD="full")  # on 0.0.0.0 without credentials: said so
    env.pop("ANGORA_AUTH_TOKEN", None)
    r = redis.Redis.from_url(url)
    r.flushdb()  # db 0 of the server this session started
    with procfile_web(env, tmp_path) as (proc, port):
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # listening is the server's own socket; answering means its workers are up
            try:
                if call(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "web.log").read_text()[-2000:]
            time.sleep(0.05)
        yield Web(base, r, keys)
        os.killpg(proc.pid, signal.SIGTERM)
        assert group_gone(proc, 30), "processes of the web server were left running after SIGTERM"
        output = (tmp_path / "web.log").read_text()
        assert "Traceback" not in output, output[-3000:]
        assert "seems quite high" not in output, output[-3000:]  # granian's advice against our deliberate sizing
        assert "ANGORA_AUTH=off: serving on 0.0.0.0 WITHOUT AUTHENTICATION" in output, output[-3000:]
    r.close()


def test_procfile_web_stops_when_told_to_as_it_starts(angora_env: dict[str, str], tmp_path: Path) -> None:
    """SIGTERM as soon as the port is open, while its workers start: without --workers-kill-timeout granian
    waited for ever for a worker that missed the signal."""
    with procfile_web(dict(angora_env, ANGORA_AUTH_TOKEN="t0k3n"), tmp_path, poll=0.002) as (proc, _):
        os.killpg(proc.pid, signal.SIGTERM)
        assert group_gone(proc, 30), "processes of the web server were left running after SIGTERM"


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


def test_procfile_web_serves_send_pages_and_dashboard(web: Web) -> None:
    server, r, keys, before = web.base, web.r, web.keys, web.sent()
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
    assert web.sent() == before + 2


@pytest.mark.parametrize("data,headers,status", [
    (b"msg=hello..world", FORM, 400),
    (b"msg=hello.world&color=red", FORM, 400),
    (b"{", {"Content-Type": "application/json"}, 400),
    (b"msg=hello.world", dict(FORM, Origin="http://evil.example"), 403),
])
def test_procfile_web_bad_requests_are_4xx_json(web: Web, data: bytes, headers: dict[str, str],
                                                status: int) -> None:
    before = web.sent()
    got, head, body = call(web.base + "/send", data, headers)
    assert got == status and head["Content-Type"] == "application/json", body[:300]
    assert json.loads(body)["error"]
    assert web.sent() == before


def test_procfile_web_refuses_a_body_over_the_limit_at_once(web: Web) -> None:
    """Content-Length over 1 MiB: 413 JSON from the headers alone, the body never read. (Sending the whole body
    first races the server's close: the client may get a reset instead of the answer, which is TCP, not us.)"""
    host, port = web.base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Content-Length: %d\r\n\r\n" % (2 * 1024 * 1024))
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"application/json" in head.lower(), reply[:300]
    assert json.loads(body)["error"]


def test_procfile_web_accepts_a_chunked_body(web: Web) -> None:
    """curl -H 'Transfer-Encoding: chunked': no Content-Length, so the fast lane leaves it to Flask."""
    before = web.sent()
    host, port = web.base.rsplit("/", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(b"POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                  b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                  b"6\r\nmsg=he\r\n9\r\nllo.world\r\n0\r\n\r\n")
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 202"), reply[:300]
    assert web.sent() == before + 1


def test_procfile_web_under_concurrent_scripts(web: Web) -> None:
    """8 clients x 50 messages at once: every one accepted once, each with its own run."""
    answers: list[Any] = []
    before = web.sent()

    def client() -> None:
        for _ in range(50):
            answers.append(call(web.base + "/send", b"msg=hello.world", FORM))

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [a[0] for a in answers] == [202] * 400
    assert len({json.loads(a[2])["run_id"] for a in answers}) == 400
    assert web.sent() == before + 400


def test_procfile_web_knows_its_own_origin(web: Web) -> None:
    """rq-dashboard's buttons (with the page's CSRF token) are accepted when the browser's Origin is this site:
    the server must pass the Host."""
    server = web.base
    assert call(server + "/api/v1/jobs/hello/run", b"{}", {"Content-Type": "application/json"})[0] == 202
    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    page = browser.open(server + "/rq/", timeout=30).read().decode()
    token = re.search(r'name="csrf-token" content="([^"]+)"', page).group(1)  # type: ignore[union-attr]

    def compact(origin: str) -> tuple[int, bytes]:
        req = urllib.request.Request(server + f"/rq/queue/{web.keys.rq_name('default')}/compact", b"", method="POST",
                                     headers={"Origin": origin, "X-CSRF-Token": token})
        try:
            with browser.open(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    assert compact("http://evil.example")[0] == 403
    status, body = compact(server)
    assert status == 200 and json.loads(body)["status"] == "OK"


def test_procfile_web_refuses_to_serve_the_network_without_credentials(angora_env: dict[str, str],
                                                                      tmp_path: Path) -> None:
    """On 0.0.0.0 without ANGORA_AUTH_TOKEN (nor ANGORA_AUTH=off) the web line stops at once, in one line."""
    env = dict(angora_env, PORT=str(free_port()),
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.Popen(["sh", "-c", web_line()], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # a server that did start (the old behaviour) must not stay
        except ProcessLookupError:
            pass
    assert proc.returncode != 0
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "ANGORA_AUTH_TOKEN" in lines[0] and "0.0.0.0" in lines[0], stderr
    assert not stdout


def test_procfile_web_with_a_token_requires_it(angora_env: dict[str, str], tmp_path: Path) -> None:
    with procfile_web(dict(angora_env, ANGORA_AUTH_TOKEN="t0k3n"), tmp_path) as (proc, port):
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if call(base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "web.log").read_text()[-2000:]
            time.sleep(0.05)
        assert json.loads(call(base + "/healthz")[2]) == {"status": "degraded"}  # no details without the token
        assert call(base + "/api/v1/jobs")[0] == 401
        assert call(base + "/api/v1/jobs", headers={"Authorization": "Bearer t0k3n"})[0] == 200
        os.killpg(proc.pid, signal.SIGTERM)
        assert group_gone(proc, 30)
    assert "ANGORA_AUTH=off" not in (tmp_path / "web.log").read_text()


SLOW_BODY = (b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Length: 1000\r\n\r\ntoken=")


def test_procfile_web_answers_beside_slow_clients(web: Web) -> None:
    """30 connections holding a half-sent body and 10 idle ones (8 froze both workers before): other clients'
    /healthz and /send are still answered, on new connections."""
    host, port = web.base.rsplit("/", 1)[1].split(":")
    held = []
    try:
        for i in range(40):
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(SLOW_BODY if i < 30 else b"")
            held.append(s)
        time.sleep(0.5)  # let the server hand the slow requests to its threads
        before = web.sent()
        for _ in range(5):
            assert call(web.base + "/healthz")[0] == 200
            assert call(web.base + "/send", b"msg=hello.world", FORM)[0] == 202
        assert web.sent() == before + 5
    finally:
        for s in held:
            s.close()


def test_angora_web_stops_when_told_to_as_it_starts(angora_env: dict[str, str], tmp_path: Path) -> None:
    """`angora web` (and so `angora up`) runs the same server, with the same kill timeout for such a worker."""
    port = free_port()
    with (tmp_path / "web.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "angora_rq.cli", "web", "--port", str(port)],
                                env=angora_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not listening(port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()[-2000:]
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGTERM)
        assert group_gone(proc, 30), "processes of `angora web` were left running after SIGTERM"
        assert proc.returncode == 0, (tmp_path / "web.log").read_text()[-2000:]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()

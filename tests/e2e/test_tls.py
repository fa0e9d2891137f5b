"""rediss:// for every role, the CLI, the web app and the Link fast path, through a TLS terminator of the tests'
own (tests/tls_proxy.py) with a certificate made at test time: verified against its CA file, or not verified."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import redis

from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings, with_tls_options
from angora_rq.store.connection import connect, first_contact
from angora_rq.store.link import Link
from angora_rq.store.queries import Queries
from angora_testkit import CLI, System, wait_for, write_config
from tls_proxy import TlsProxy

TWO_JOBS = """
- name: first
  triggers: [tls.go]
  command: [sh, -c, 'echo "$ANGORA_PARAM_WHO" > {tmp}/first']
  messages: [tls.next]
- name: second
  triggers: [tls.next]
  command: [sh, -c, 'echo second > {tmp}/second']
- schedule: tick
  every: 1s
  message: tls.tick
- name: ticked
  triggers: [tls.tick]
  command: [touch, '{tmp}/ticked']
"""


def tls_env(angora_env: dict[str, str], tls_url: str, tls_proxy: TlsProxy) -> dict[str, str]:
    """The test's environment with REDIS_URL through TLS, verified against the test CA (ANGORA_REDIS_TLS_CA)."""
    return dict(angora_env, REDIS_URL=tls_url, ANGORA_REDIS_TLS_CA=str(tls_proxy.certs.ca))


def test_tls_settings_go_into_the_rediss_url_only() -> None:
    url = with_tls_options("rediss://:pw@host:6380/2?socket_timeout=3", "none", "/etc/ca.pem")
    query = parse_qs(urlsplit(url).query)
    assert query == {"socket_timeout": ["3"], "ssl_cert_reqs": ["none"], "ssl_ca_certs": ["/etc/ca.pem"]}
    assert with_tls_options("rediss://host/0?ssl_cert_reqs=required", "none", None).endswith("ssl_cert_reqs=required")
    assert with_tls_options("redis://host/0", "none", "/ca.pem") == "redis://host/0"
    s = Settings.from_env({"REDIS_URL": "rediss://h:1/0", "ANGORA_REDIS_TLS_VERIFY": "NONE"})
    assert s.effective_redis_url == "rediss://h:1/0?ssl_cert_reqs=none"
    with pytest.raises(AngoraError, match="ANGORA_REDIS_TLS_VERIFY='maybe'"):
        Settings.from_env({"ANGORA_REDIS_TLS_VERIFY": "maybe"})


@pytest.mark.parametrize("how", ["ca-file", "no-verify-env", "no-verify-url"])
def test_connect_and_link_speak_tls(how: str, tls_url: str, tls_proxy: TlsProxy, r: redis.Redis) -> None:
    env = {"REDIS_URL": tls_url}
    if how == "ca-file":
        env["ANGORA_REDIS_TLS_CA"] = str(tls_proxy.certs.ca)
    elif how == "no-verify-env":
        env["ANGORA_REDIS_TLS_VERIFY"] = "none"
    else:
        env["REDIS_URL"] = tls_url + "?ssl_cert_reqs=none"
    client = connect(Settings.from_env(env))
    before = tls_proxy.connections
    assert first_contact(client, tls_url) is None
    client.set("via-client", "1")
    # The Link builds its connection from the client's pool: an SSLConnection, through the terminator.
    link = Link(client)
    assert link.call("SET", "via-link", "2") == b"OK"
    with client.pipeline() as pipe:
        pipe.incr("counter")
        pipe.get("via-client")
        assert link.execute(pipe) == [1, b"1"]
    assert type(link._connection()).__name__ == "SSLConnection"
    link.close()
    assert tls_proxy.connections > before
    assert r.mget("via-client", "via-link", "counter") == [b"1", b"2", b"1"]  # the same database, in plain


def test_an_untrusted_certificate_is_one_line_saying_what_to_do(tls_url: str, angora_env: dict[str, str]) -> None:
    with pytest.raises(AngoraError, match="ANGORA_REDIS_TLS_VERIFY=none") as e:
        first_contact(connect(Settings.from_env({"REDIS_URL": tls_url})), tls_url)
    assert "not trusted" in e.value.message and "\n" not in e.value.message
    out = subprocess.run([*CLI, "worker"], env=dict(angora_env, REDIS_URL=tls_url), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert "ANGORA_REDIS_TLS_CA" in line and "ANGORA_REDIS_TLS_VERIFY=none" in line


def test_a_missing_ca_file_is_refused_before_connecting(tls_url: str, angora_env: dict[str, str],
                                                        tmp_path: Path) -> None:
    env = dict(angora_env, REDIS_URL=tls_url, ANGORA_REDIS_TLS_CA=str(tmp_path / "nope.pem"))
    out = subprocess.run([*CLI, "matcher", "--config", str(write_config(tmp_path / "c", TWO_JOBS))], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [f"Error: ANGORA_REDIS_TLS_CA={tmp_path / 'nope.pem'}: no readable "
                                               "file there; give the PEM file of the CA that signed the Redis "
                                               "server's certificate"]


def test_every_role_and_the_cli_work_over_tls(angora_env: dict[str, str], tls_url: str, tls_proxy: TlsProxy,
                                              redis_url: str, tmp_path: Path) -> None:
    env = tls_env(angora_env, tls_url, tls_proxy)
    s = System(env, write_config(tmp_path / "config", TWO_JOBS.replace("{tmp}", str(tmp_path))), tmp_path)
    s.r = redis.Redis.from_url(redis_url)  # the test reads what the processes wrote, in plain, on the same db
    s.q = Queries(s.r, s.keys)
    try:
        for role in ("matcher", "worker", "scheduler"):
            s.start(role)
        sent = subprocess.run([*CLI, "send", "tls.go", "-p", "WHO=tls", "--wait", "--timeout", "60"], env=s.env,
                              capture_output=True, text=True, timeout=90)
        assert sent.returncode == 0, sent.stdout + sent.stderr + s.logs()
        run_id = sent.stdout.split()[0]
        assert (tmp_path / "first").read_text() == "tls\n" and (tmp_path / "second").exists()
        status = subprocess.run([*CLI, "status", run_id, "--json"], env=s.env, capture_output=True, text=True,
                                timeout=60)
        assert json.loads(status.stdout)["status"] == "succeeded", status.stderr
        wait_for(lambda: (tmp_path / "ticked").exists(), 30, what="the scheduler's tick to run " + s.logs())
    finally:
        s.stop()
    assert all(p.returncode == 0 for p in s.procs.values()), s.logs()
    assert "Traceback" not in s.logs()


def test_the_web_app_and_rq_dashboard_over_tls(tls_url: str, tls_proxy: TlsProxy, keys: Keys, tmp_path: Path,
                                               r: redis.Redis) -> None:
    from angora_rq.web import create_app

    settings = Settings.from_env({"REDIS_URL": tls_url, "ANGORA_REDIS_TLS_VERIFY": "none", "ANGORA_PREFIX": keys.prefix,
                                  "ANGORA_CONFIG": str(write_config(tmp_path / "c", TWO_JOBS))})
    client = create_app({"SETTINGS": settings, "TESTING": True}).test_client()
    health = client.get("/healthz")
    assert health.status_code == 200 and health.get_json()["redis"]["ok"] is True
    sent = client.post("/send", data={"msg": "tls.go"}, headers={"Accept": "application/json"})
    assert sent.status_code == 202, sent.data
    assert r.xlen(keys.stream()) == 1
    queues = client.get("/rq/0/data/queues.json")
    assert queues.status_code == 200 and "queues" in queues.get_json()


def test_the_proxy_really_is_tls(tls_proxy: TlsProxy) -> None:
    plain = redis.Redis(port=tls_proxy.port, socket_timeout=5, socket_connect_timeout=5)
    with pytest.raises(redis.exceptions.ConnectionError):
        plain.ping()

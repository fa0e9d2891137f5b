"""Input limits, redirects after login, and the definitions version the web follows (issue 14)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

import pytest
import redis
from flask import Flask

from angora_rq.core.errors import InvalidInput
from angora_rq.core.keys import Keys
from angora_rq.core.messages import check_params
from angora_rq.core.model import Config
from angora_rq.core.security import MAX_JSON_DEPTH, local_redirect, parse_json
from angora_rq.core.settings import Settings
from angora_rq.core.snapshot import Snapshot
from angora_rq.definitions.load import load_config
from angora_rq.processes.matcher import Matcher
from angora_rq.store import bus
from angora_rq.store.versions import publish_running_version
from angora_rq.web import create_app

JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
TOKEN = "inputs-token"
MakeApp = Callable[..., Flask]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "jobs.yml").write_text("- name: hello\n  triggers: [say.hello]\n  command: echo hi\n")
    return folder


@pytest.fixture
def make_app(redis_url: str, keys: Keys, tmp_path: Path, config: Path) -> MakeApp:
    def make(**overrides: Any) -> Flask:
        fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=config,
                                      data_dir=tmp_path / "data")
        fields.update(overrides)
        return create_app({"SETTINGS": Settings(**fields), "TESTING": True})
    return make


# -- JSON and params ---------------------------------------------------------------------------------------

DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize("url", ["/send", "/api/v1/messages"])
@pytest.mark.parametrize("body", [
    '{"msg": "say.hello", "params": {"X": ' + DEEP + "}}",  # was 503 "internal error" (RecursionError)
    '{"msg": "say.hello", "params": {"X": NaN}}', '{"msg": "say.hello", "params": {"X": Infinity}}',
    '{"msg": "say.hello", "params": {"X": -Infinity}}', '{"msg": "say.hello", "params": {"X": 1e400}}',
    '{"msg": "say.hello", "params": {"X": 123456789012345678901234567890}}',
    '{"msg": "say.hello", "params": {"abc": "1", "ABC": "2"}}',  # the command would see one of them
])
def test_bad_json_is_400_and_sends_nothing(make_app: MakeApp, r: redis.Redis, keys: Keys, url: str,
                                           body: str) -> None:
    resp = make_app().test_client().post(url, data=body, headers=JSON)
    assert resp.status_code == 400 and resp.get_json()["error"]
    assert r.xlen(keys.stream()) == 0


@pytest.mark.parametrize("form", [
    b"msg=say.hello&param.abc=1&param.ABC=2", b"msg=say.hello&params=" + quote(DEEP).encode(),
    b"msg=say.hello&params=" + quote('{"X": NaN}').encode(), b"msg=say.hello&params=" + quote('{"X": 1e999}').encode(),
])
def test_bad_form_params_are_400(make_app: MakeApp, r: redis.Redis, keys: Keys, form: bytes) -> None:
    resp = make_app().test_client().post("/send", data=form, headers=FORM)
    assert resp.status_code == 400, resp.get_data(as_text=True)[:300]
    assert r.xlen(keys.stream()) == 0


def test_run_job_body_limits(make_app: MakeApp) -> None:
    client = make_app().test_client()
    assert client.post("/api/v1/jobs/hello/run", data='{"params": ' + DEEP + "}", headers=JSON).status_code == 400
    assert client.post("/api/v1/jobs/hello/run", data='{"params": {"A": NaN}}', headers=JSON).status_code == 400
    assert client.post("/api/v1/jobs/hello/run", data='{"params": {"A": 1.5}}', headers=JSON).status_code == 202


def test_parse_json_limits() -> None:
    assert parse_json('{"a": [1, 2.5, "x", null, true]}') == {"a": [1, 2.5, "x", None, True]}
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json.dumps(parse_json(deepest)) == deepest.replace("][", "], [")
    for text in ("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1), "[" * 100_000, "NaN", "[Infinity]",
                 "-1e309", "{", b"\xff"):
        with pytest.raises(InvalidInput):
            parse_json(text)


def test_param_names_unique_ignoring_case() -> None:
    assert check_params({"abc": "1", "abd": "2"}) == {"abc": "1", "abd": "2"}
    with pytest.raises(InvalidInput, match="differ only in case"):
        check_params({"Target": "a", "TARGET": "b"})
    with pytest.raises(InvalidInput, match="finite"):
        check_params({"X": float("nan")})


# -- redirects ---------------------------------------------------------------------------------------------

LOCAL = ["/", "/jobs/hello", "/runs?status=failed&job=x", "/api/v1/jobs", "/%252F%252Fevil.example",
         "/a//b", "/?next=//evil.example"]
OFF_SITE = ["/%2Fjobs", "//evil.example", "//evil.example/x", "/\\evil.example", "\\\\evil.example",
            "/%2F/evil.example", "%2F%2Fevil.example", "/%2F%2Fevil.example", "/%5Cevil.example", "/%5C%5Cevil.example",
            "https://evil.example/", "http:evil.example", "HTTPS://evil.example", "javascript:alert(1)",
            "data:text/html,x", " //evil.example", "evil.example", "/\uff0fevil.example", "\uff0f\uff0fevil.example",
            "/\u2215evil.example", "\u2215\u2215evil.example", "/ｅvil", "/\u200b/evil.example", "///evil.example",
            "/\\/evil.example"]
CONTROL = ["/\t/evil.example", "/%09/evil.example", "/\r\nSet-Cookie: x=1", "/%0d%0aSet-Cookie:%20x=1",
           "/\n/evil.example", "/%0a", "/\x00", "/%00", "/\x7f", "/%7f/evil.example"]


@pytest.mark.parametrize("target", LOCAL)
def test_local_paths_are_kept(target: str) -> None:
    assert local_redirect(target) == target


@pytest.mark.parametrize("target", OFF_SITE)
def test_other_sites_become_home(target: str) -> None:
    assert local_redirect(target) == "/"


@pytest.mark.parametrize("target", CONTROL)
def test_control_characters_are_refused(target: str) -> None:
    with pytest.raises(InvalidInput):
        local_redirect(target)


def _csrf(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]


@pytest.mark.parametrize("target", LOCAL + OFF_SITE + CONTROL)
def test_login_redirects_only_to_this_site(make_app: MakeApp, target: str) -> None:
    """Before: next=/%09/evil.com came back as `Location: //evil.com`, and a CR in `next` was a 503."""
    client = make_app(auth_token=TOKEN).test_client()
    page = client.get("/login?next=" + quote(target, safe=""))
    csrf = _csrf(client.get("/login").get_data(as_text=True))
    resp = client.post("/login", data={"token": TOKEN, "csrf_token": csrf, "next": target},
                       headers={"Origin": "http://localhost"})
    if target in CONTROL:
        assert page.status_code == 400 and resp.status_code == 400
        return
    assert page.status_code == 200
    location = resp.headers["Location"]
    assert resp.status_code == 302 and location == (target if target in LOCAL else "/")
    assert location.startswith("/") and not location.startswith(("//", "/\\")) and "\\" not in location


# -- one definitions version everywhere ---------------------------------------------------------------------

def test_web_follows_the_version_the_matchers_run(make_app: MakeApp, config: Path, r: redis.Redis,
                                                  keys: Keys) -> None:
    """Before: the web read its files again at most every 2 s, on requests; a job the matchers already ran
    was 404 in between (and for good when a broken file came next). Now a new version published by the matchers
    makes it read them at once."""
    app = make_app()
    client = app.test_client()
    assert client.get("/api/v1/jobs/hello").status_code == 200
    reloader = app.extensions["angora"].definitions.reloader
    reloader.watch_every = reloader.check_every = 3600.0  # only following the matchers may reload it here
    (config / "more.yml").write_text("- name: later\n  triggers: [say.later]\n  command: echo later\n")
    assert client.get("/api/v1/jobs/later").status_code == 404  # the matchers still run the first version
    new = load_config(config).version
    publish_running_version(r, keys, new)  # what a matcher does once it has loaded the files
    assert client.get("/api/v1/jobs/later").status_code == 200
    status = client.get("/api/v1/config").get_json()
    assert status["version"] == status["matchers_version"] == new


def test_matcher_publishes_the_version_it_runs(r: redis.Redis, keys: Keys) -> None:
    snaps = [Snapshot(Config(jobs=(), version="v1"))]
    m = Matcher(r, keys, Settings(prefix=keys.prefix), lambda: snaps[-1], name="m1")
    bus.ensure_group(r, keys)
    m.step(block_ms=1)
    assert r.get(keys.running_version()) == b"v1" and 0 < r.ttl(keys.running_version()) <= 60
    snaps.append(Snapshot(Config(jobs=(), version="v2")))
    m.step(block_ms=1)  # a new version is published at once, not at the next heartbeat
    assert r.get(keys.running_version()) == b"v2"


def test_config_status_document(make_app: MakeApp) -> None:
    body = make_app().test_client().get("/api/v1/config").get_json()
    assert "matchers_version" in body and body["matchers_version"] is None
    assert json.dumps(body)

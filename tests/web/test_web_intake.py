"""The fast lane of POST /send (web/intake.py): it answers exactly as the Flask views do, and only when it may."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, parse_qsl, urlencode

import pytest
import redis
from flask import Flask
from hypothesis import HealthCheck, given, settings, strategies as st
from werkzeug.datastructures import MultiDict
from werkzeug.test import EnvironBuilder, run_wsgi_app

from angora_rq.core.keys import Keys
from angora_rq.core.pressure import WORK_RETRY_AFTER
from angora_rq.core.settings import Settings
from angora_rq.web import create_app
from angora_rq.core.errors import InvalidInput
from angora_rq.web.intake import Fields, Intake
from angora_rq.web.send import form_message

FORM = "application/x-www-form-urlencoded"


class Counted:
    """Wraps the Flask app behind the lane and counts the requests the lane passed to it."""

    def __init__(self, flask_app: Any) -> None:
        self.flask_app = flask_app
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        return self.flask_app(environ, start_response)


MakeApp = Callable[..., tuple[Flask, Counted]]


@pytest.fixture
def make_app(redis_url: str, keys: Keys, tmp_path: Path) -> MakeApp:
    """Factory: (app, counter of requests that reached Flask); lane=False serves everything through Flask."""
    folder = tmp_path / "config"
    folder.mkdir(exist_ok=True)
    (folder / "jobs.yml").write_text("- name: a\n  triggers: [a.b]\n  command: 'true'\n")

    def make(lane: bool = True, **overrides: Any) -> tuple[Flask, Counted]:
        fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=folder,
                                      data_dir=tmp_path / "data")
        fields.update(overrides)
        app = create_app({"SETTINGS": Settings(**fields), "TESTING": True})
        intake = app.wsgi_app
        assert isinstance(intake, Intake)
        counted = Counted(intake.flask)
        intake.flask = counted
        if not lane:
            app.wsgi_app = counted  # type: ignore[method-assign]
        return app, counted
    return make


def answer(app: Flask, path: str, body: bytes, content_type: str = FORM,
           **headers: str) -> tuple[int, dict, Any, bytes]:
    """(status, headers but Content-Length, JSON body with the stream id blanked, raw body, id blanked) of a POST."""
    client = app.test_client()
    if "Cookie" in headers:  # the test client writes the Cookie header from its own jar
        name, _, value = headers.pop("Cookie").partition("=")
        client.set_cookie(name, value)
    resp = client.post(path, data=body, content_type=content_type, headers=headers)
    head = {k: v for k, v in resp.headers.items() if k != "Content-Length"}
    payload = resp.get_json(silent=True)
    if isinstance(payload, dict) and "message_id" in payload:
        payload["message_id"] = "<id>"
    raw = re.sub(rb'"message_id": ?"[0-9-]+"', b'"message_id":"<id>"', resp.data)
    return resp.status_code, head, payload, raw


ACCEPTED = [
    ("/send", b"msg=a.b&run_id=r1", FORM),
    ("/send", b"msg=a.b&run_id=r2&param.DAY=mon&params=%7B%22H%22%3A%225%22%7D", FORM),
    ("/send", b"msg=a.b&run_id=r3&csrf_token=", "application/x-www-form-urlencoded; charset=utf-8"),
    ("/send", b'{"msg": "a.b", "run_id": "r4", "params": {"N": 2}}', "application/json"),
    ("/api/v1/messages", b'{"msg": "a.b", "run_id": "r5"}', "application/json"),
    ("/api/v1/messages", b"msg=a.b&run_id=r6", FORM),
]


@pytest.mark.parametrize("path,body,content_type", ACCEPTED)
def test_lane_answers_what_flask_answers(make_app: MakeApp, r: redis.Redis, keys: Keys, path: str, body: bytes,
                                         content_type: str) -> None:
    lane, passed = make_app()
    flask_only, _ = make_app(lane=False)
    fast = answer(lane, path, body, content_type)
    assert passed.calls == 0, "the lane should have answered this request itself"
    assert fast[0] == 202
    assert fast == answer(flask_only, path, body, content_type)
    entries = r.xrange(keys.stream())
    assert len(entries) == 2 and entries[0][1].keys() == entries[1][1].keys()
    fast_entry, flask_entry = ({k: v for k, v in fields.items() if k != b"s"} for _, fields in entries)  # s: sent at
    assert fast_entry == flask_entry


PASSED_ON = [  # (what, request kwargs, status Flask answers)
    ("browser cookie", dict(body=b"msg=a.b", Cookie="x=1"), 403),
    ("browser origin", dict(body=b"msg=a.b", Origin="http://localhost"), 403),
    ("bad topic", dict(body=b"msg=a..b"), 400),
    ("unknown field", dict(body=b"msg=a.b&color=red"), 400),
    ("bad params JSON", dict(body=b"msg=a.b&params=%7B"), 400),
    ("not UTF-8", dict(body=b"msg=a.b&param.X=%FF"), 202),  # Werkzeug keeps the escape; the lane lets it decide
    ("multipart", dict(body=b"", content_type="multipart/form-data; boundary=x"), 400),
    ("+json type", dict(body=b'{"msg": "a.b"}', content_type="application/merge+json"), 202),
    ("text/plain", dict(body=b"msg=a.b", content_type="text/plain"), 400),
    ("JSON not an object", dict(body=b'"a.b"', content_type="application/json"), 400),
    ("broken JSON", dict(body=b"{", content_type="application/json"), 400),
    ("empty body", dict(body=b""), 400),
]


@pytest.mark.parametrize("what,kwargs,status", PASSED_ON, ids=[p[0] for p in PASSED_ON])
def test_lane_leaves_everything_else_to_flask(make_app: MakeApp, what: str, kwargs: dict[str, Any],
                                              status: int) -> None:
    lane, passed = make_app()
    flask_only, _ = make_app(lane=False)
    kwargs = dict(kwargs)
    body, content_type = kwargs.pop("body"), kwargs.pop("content_type", FORM)
    fast = answer(lane, "/send", body, content_type, **kwargs)
    assert passed.calls == 1
    assert fast[0] == status
    slow = answer(flask_only, "/send", body, content_type, **kwargs)
    if status == 202:
        fast[2]["run_id"] = slow[2]["run_id"] = "<run>"
    assert fast[:3] == slow[:3]


def test_other_routes_and_methods_go_to_flask(make_app: MakeApp) -> None:
    app, passed = make_app()
    client = app.test_client()
    assert client.get("/send").status_code == 405
    assert client.post("/send/", data={"msg": "a.b"}).status_code in (308, 404)
    assert client.post("/api/v1/jobs/a/run", json={}).status_code == 202
    assert passed.calls == 3


def test_a_body_shorter_than_its_length_is_flasks_400(make_app: MakeApp, r: redis.Redis, keys: Keys) -> None:
    app, passed = make_app()
    environ = EnvironBuilder(path="/send", method="POST", data=b"msg=a.b", content_type=FORM).get_environ()
    environ["CONTENT_LENGTH"] = "100"
    _, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("400") and passed.calls == 1
    assert r.xlen(keys.stream()) == 0


def test_a_body_over_the_limit_is_flasks_413(make_app: MakeApp) -> None:
    app, passed = make_app()
    app.wsgi_app.max_body = 16  # type: ignore[attr-defined]
    app.config["MAX_CONTENT_LENGTH"] = 16
    status, _, body, _ = answer(app, "/send", b"msg=a.b&run_id=" + b"x" * 20)
    assert status == 413 and body["error"] and passed.calls == 1


def test_a_send_error_is_answered_by_flask_and_sends_nothing_twice(make_app: MakeApp, r: redis.Redis,
                                                                   keys: Keys) -> None:
    app, passed = make_app(backlog=1)
    first = answer(app, "/send", b"msg=a.b")
    second = answer(app, "/send", b"msg=a.b")
    assert first[0] == 202 and passed.calls == 1
    assert second[0] == 503 and second[2]["detail"]["budget"] == "work" and second[1]["Cache-Control"] == "no-store"
    assert r.xlen(keys.stream()) == 1


@pytest.mark.parametrize("path", ["/send", "/api/v1/messages"])
def test_over_a_budget_the_lane_answers_flasks_503_with_retry_after(make_app: MakeApp, r: redis.Redis, keys: Keys,
                                                                   path: str) -> None:
    lane, _ = make_app(backlog=1)
    flask_only, _ = make_app(lane=False, backlog=1)
    assert answer(lane, path, b"msg=a.b")[0] == 202
    fast, slow = answer(lane, path, b"msg=a.b"), answer(flask_only, path, b"msg=a.b")
    assert fast == slow and fast[0] == 503 and fast[1]["Retry-After"] == str(WORK_RETRY_AFTER)
    assert fast[2]["detail"] == {"budget": "work", "used": 1, "limit": 1, "retry_after": WORK_RETRY_AFTER}
    assert r.xlen(keys.stream()) == 1


def test_redis_down_is_flasks_503(make_app: MakeApp) -> None:
    app, passed = make_app(redis_url="redis://127.0.0.1:1/0")
    status, _, body, _ = answer(app, "/send", b"msg=a.b")
    assert status == 503 and "not reachable" in body["error"] and passed.calls == 1


def test_with_auth_only_a_right_bearer_token_takes_the_lane(make_app: MakeApp, r: redis.Redis, keys: Keys) -> None:
    app, passed = make_app(auth_token="s3cret", auth_user="ann", auth_password="pw")
    assert answer(app, "/send", b"msg=a.b", Authorization="Bearer s3cret")[0] == 202
    assert passed.calls == 0
    assert answer(app, "/send", b"msg=a.b", Authorization="bearer  s3cret ")[0] == 202
    assert passed.calls == 0
    assert answer(app, "/send", b"msg=a.b", Authorization="Bearer wrong")[0] == 401
    assert answer(app, "/send", b"msg=a.b")[0] == 401
    assert answer(app, "/send", b"msg=a.b", Authorization="Basic YW5uOnB3")[0] == 202  # ann:pw, through Flask
    assert passed.calls == 3
    assert r.xlen(keys.stream()) == 3


FIELDS = st.sampled_from(["msg", "run_id", "params", "param.A", "param.1", "param.", "csrf_token", "x", "msg"])
VALUES = st.one_of(st.sampled_from(["a.b", "", "a..b", "r-1", "{}", '{"A":"1"}', "[1]", "\x00", "é", "%FF"]),
                   st.text(max_size=12))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(FIELDS, VALUES), max_size=5), raw=st.booleans())
def test_any_form_gets_the_same_answer_from_both(make_app: MakeApp, pairs: list[tuple[str, str]], raw: bool) -> None:
    lane, _ = make_app()
    flask_only, _ = make_app(lane=False)
    body = "&".join(f"{k}={v}" for k, v in pairs).encode("utf-8", "surrogatepass") if raw else urlencode(pairs).encode()
    fast, slow = answer(lane, "/send", body), answer(flask_only, "/send", body)
    if fast[0] == 202 and slow[0] == 202:  # both accepted: run ids are generated unless given
        fast[2]["run_id"] = slow[2]["run_id"] = "<run>"
    assert fast[:3] == slow[:3]
    json.dumps(fast[2])


def read_form(lane: bool, body: str) -> Any:
    """What form_message makes of `body` read as the fast lane reads it (Fields) or as Flask's views do (a
    MultiDict): the message's parts, or the error."""
    form: Any = (Fields(parse_qs(body, keep_blank_values=True)) if lane
                 else MultiDict(parse_qsl(body, keep_blank_values=True)))
    try:
        sub = form_message(form)
    except InvalidInput as e:
        return e.message, e.detail
    msg = sub.msg
    return msg.topic, msg.params, msg.run_id if not msg.new_run else "<new>", sub.key


@settings(max_examples=200, deadline=None)
@given(pairs=st.lists(st.tuples(FIELDS, VALUES), max_size=6))
def test_the_lane_reads_a_form_as_werkzeug_does(pairs: list[tuple[str, str]]) -> None:
    """The lane's Fields against werkzeug's MultiDict (what Flask's views read): the first of repeated fields, each
    value of a repeated param.X, the order of fields."""
    body = urlencode(pairs)
    assert read_form(True, body) == read_form(False, body)


@pytest.mark.parametrize("body", ["msg=a.b&msg=c.d", "msg=a.b&param.X=1&param.X=2", "run_id=r-1&msg=a.b&run_id=r-2",
                                  "msg=a.b&param.A=1&params=%7B%22B%22%3A%222%22%7D", "msg=&msg=a.b"])
def test_repeated_fields_are_read_as_werkzeug_reads_them(body: str) -> None:
    assert read_form(True, body) == read_form(False, body)

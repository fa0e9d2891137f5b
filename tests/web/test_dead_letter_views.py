"""Dead letters, as the API, /metrics and the dashboard show them (Flask's test client, real Redis)."""
from __future__ import annotations
# ruff: noqa: F811  (the fixtures imported from test_ui_pages are parameters of the tests below)

import redis
from flask.testing import FlaskClient

from angora_rq.core.keys import MATCHER_GROUP, Keys
from angora_rq.core.schema import Entry
from angora_rq.store import bus
from angora_rq.store.link import Link
from angora_rq.store.deadletters import KEPT, VALUE_LIMIT, dead_letter
from test_ui_pages import app, client, config_dir, page, settings  # noqa: F401 (fixtures)
from angora_testkit import fields
from test_web_api import conforms


def put_aside(r: redis.Redis, keys: Keys, fields: dict[str, str], error: str) -> str:
    """An entry read by matcher m1, then put aside as the matcher does."""
    bus.ensure_group(r, keys)
    entry = r.xadd(keys.stream(), fields).decode()
    r.xreadgroup(MATCHER_GROUP, "m1", {keys.stream(): ">"})
    assert dead_letter(Link(r), keys, entry, fields, error, "m1", 1.0, False)
    return entry


def test_the_api_lists_what_was_put_aside_newest_first(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    resp = client.get("/api/v1/dead-letters")
    assert conforms(resp, "/api/v1/dead-letters") == {"total": 0, "kept": KEPT, "dead_letters": []}
    first = put_aside(r, keys, {Entry.topic: "go", Entry.params: "{"}, "ValueError: no JSON")
    second = put_aside(r, keys, {Entry.topic: "go", Entry.params: "x" * (VALUE_LIMIT + 50)}, "E" * 900)
    body = conforms(client.get("/api/v1/dead-letters"), "/api/v1/dead-letters")
    assert body["total"] == 2 and [x["entry"] for x in body["dead_letters"]] == [second, first]
    newest = body["dead_letters"][0]
    assert len(newest["fields"][Entry.params]) == VALUE_LIMIT and len(newest["error"]) == 500
    # Put aside once: a second call for an entry no longer pending does nothing.
    assert not dead_letter(Link(r), keys, first, {}, "again", "m1", 2.0, False)
    assert conforms(client.get("/api/v1/dead-letters"), "/api/v1/dead-letters")["total"] == 2
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "angora_messages_dead_lettered_total 2.0" in metrics


def test_the_dashboard_says_messages_were_put_aside(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    assert "dead-letters" not in page(client, "/")
    entry = put_aside(r, keys, {Entry.topic: "<script>x</script>"}, "ValueError: <b>bad</b>")
    html = page(client, "/")
    assert "1 message\n  could not be dispatched and was put aside as a dead letter" in html and entry in html
    assert "<b>bad</b>" not in html and "&lt;b&gt;bad&lt;/b&gt;" in html


def test_a_dead_letter_is_sent_again_once_in_a_new_run(client: FlaskClient, r: redis.Redis, keys: Keys) -> None:
    entry = put_aside(r, keys, {Entry.topic: "etl.start", Entry.run: "old-run", Entry.origin: "api",
                                Entry.sent: "1", Entry.params: '{"X": "1"}'}, "ResponseError: WRONGTYPE")
    raw = r.lindex(keys.dead_letters(), 0)
    resp = client.post(f"/api/v1/dead-letters/{entry}/resend")
    assert resp.status_code == 202
    body = conforms(resp, "/api/v1/dead-letters/{entry}/resend", "post")
    assert body["run_id"] != "old-run" and body["replayed"] is False
    run = fields(r, keys.run(body["run_id"]))
    assert run["topic"] == "etl.start" and run["origin"] == f"dead-letter:{entry}" and r.xlen(keys.stream()) == 2
    assert conforms(client.get("/api/v1/dead-letters"), "/api/v1/dead-letters")["dead_letters"] == []
    # A record that could not be taken off (or two resends at once): the first answer, nothing sent again.
    r.lpush(keys.dead_letters(), raw)
    again = client.post(f"/api/v1/dead-letters/{entry}/resend")
    assert again.status_code == 202 and again.get_json() == dict(body, replayed=True)
    assert r.xlen(keys.stream()) == 2 and r.llen(keys.dead_letters()) == 0
    assert "dead-letters" not in page(client, "/")  # the dashboard's note goes once none is left to see


def test_a_dead_letter_that_cannot_be_sent_as_it_was_is_refused(client: FlaskClient, r: redis.Redis,
                                                                keys: Keys) -> None:
    missing = client.post("/api/v1/dead-letters/1-0/resend")
    assert missing.status_code == 404 and "no dead letter" in missing.get_json()["error"]
    long = put_aside(r, keys, {Entry.topic: "etl.start", Entry.params: "x" * (VALUE_LIMIT + 1)}, "too long")
    cut = client.post(f"/api/v1/dead-letters/{long}/resend")
    assert cut.status_code == 409 and "cut short" in cut.get_json()["error"]
    bad = put_aside(r, keys, {Entry.topic: "no topic!"}, "bad topic")
    refused = client.post(f"/api/v1/dead-letters/{bad}/resend")
    assert refused.status_code == 409 and "not a message that can be sent" in refused.get_json()["error"]
    assert r.llen(keys.dead_letters()) == 2  # both kept


def test_the_dead_letters_page_lists_them_with_a_send_again_button(client: FlaskClient, r: redis.Redis,
                                                                   keys: Keys) -> None:
    assert "No dead letters." in page(client, "/dead-letters")
    sendable = put_aside(r, keys, {Entry.topic: "etl.start", Entry.run: "r-1"}, "ValueError: <i>odd</i>")
    cut = put_aside(r, keys, {Entry.topic: "etl.start", Entry.params: "y" * (VALUE_LIMIT + 1)}, "too long")
    html = page(client, "/dead-letters")
    assert sendable in html and cut in html and "&lt;i&gt;odd&lt;/i&gt;" in html and "<i>odd</i>" not in html
    assert html.count('data-post="/api/v1/dead-letters/') == 1  # the cut one cannot be sent as it was
    assert f'data-post="/api/v1/dead-letters/{sendable}/resend"' in html and "cut short" in html
    assert 'href="/dead-letters"' in page(client, "/")  # the dashboard's note links here

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

"""Idempotent sends: the Idempotency-Key header, the `key` field and `angora send --key`, from SEND to real processes.

A repeat within ANGORA_IDEMPOTENCY_TTL gets the first answer back (same run id and message id, a header and a
field saying so) and sends nothing; the check is inside the SEND script, so repeats at once cannot both send.
"""
from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

import pytest
import redis
from flask import Flask

from angora_rq.core.errors import Conflict, InvalidInput, Overloaded
from angora_rq.core.keys import Keys
from angora_rq.core.messages import MAX_KEY, Message, check_idempotency_key
from angora_rq.core.pressure import Budget
from angora_rq.core.settings import Settings
from angora_rq.store.bus import submit
from angora_rq.web import create_app
from angora_rq.core.schema import Run
from angora_testkit import running, write_config

FORM = "application/x-www-form-urlencoded"


# -- the key's syntax (pure) -------------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["a", "8e03978e-40d5-43e8-bc93-6894a57f9324", "x" * MAX_KEY, "with space ~!"])
def test_printable_ascii_keys_up_to_200_are_valid(key: str) -> None:
    assert check_idempotency_key(key) == key


@pytest.mark.parametrize("key,why", [("", "empty"), ("x" * (MAX_KEY + 1), "longer than 200"),
                                     ("a\nb", "control"), ("a\x00", "control"), ("a\x7f", "control"),
                                     ("caf\u00e9", "non-ASCII"), (5, "empty")])
def test_malformed_keys_are_refused_saying_why(key: Any, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        check_idempotency_key(key)


# -- SEND --------------------------------------------------------------------------------------------------

def test_a_repeat_gets_the_first_answer_and_sends_nothing(r: redis.Redis, keys: Keys) -> None:
    first = submit(r, keys, Message.create("t.go", {"A": "1"}), key="k1", key_ttl=60)
    again = submit(r, keys, Message.create("t.go", {"A": "1"}), key="k1", key_ttl=60)  # another generated run id
    assert (again.run_id, again.message_id, again.replayed) == (first.run_id, first.message_id, True)
    assert not first.replayed and r.xlen(keys.stream()) == 1
    assert r.hget(keys.run(first.run_id), Run.active) == b"1"
    assert 0 < r.ttl(keys.idempotency("k1")) <= 60
    other = submit(r, keys, Message.create("t.go", {"A": "1"}), key="k2", key_ttl=60)
    assert other.run_id != first.run_id and r.xlen(keys.stream()) == 2
    plain = [submit(r, keys, Message.create("t.go", run_id="same")) for _ in range(2)]  # no key: both sent
    assert plain[0].message_id != plain[1].message_id and r.xlen(keys.stream()) == 4


def test_a_key_reused_for_another_message_is_a_conflict(r: redis.Redis, keys: Keys) -> None:
    first = submit(r, keys, Message.create("t.go", {"A": "1"}), key="k", key_ttl=60)
    for msg in (Message.create("t.other", {"A": "1"}), Message.create("t.go", {"A": "2"})):
        with pytest.raises(Conflict, match="another message") as e:
            submit(r, keys, msg, key="k", key_ttl=60)
        assert e.value.detail == {"run_id": first.run_id, "message_id": first.message_id}
    assert r.xlen(keys.stream()) == 1
    assert r.hget(keys.metrics(), "refused:key_reuse") == b"2"


def test_a_repeat_is_answered_even_over_a_budget(r: redis.Redis, keys: Keys) -> None:
    """The idempotency check comes before the budgets: a repeat adds no work, so it is answered from its record."""
    full = Budget(work=1)
    first = submit(r, keys, Message.create("t.go"), full, key="k", key_ttl=60)
    with pytest.raises(Overloaded):  # the work budget is used up: a new message is refused...
        submit(r, keys, Message.create("t.go"), full, key="other", key_ttl=60)
    again = submit(r, keys, Message.create("t.go"), full, key="k", key_ttl=60)  # ...a repeat is not
    assert (again.message_id, again.replayed) == (first.message_id, True)
    assert r.xlen(keys.stream()) == 1 and r.get(keys.work()) == b"1"
    assert not r.exists(keys.idempotency("other"))  # a refused send records nothing under its key


def test_after_its_ttl_a_key_sends_again(r: redis.Redis, keys: Keys) -> None:
    first = submit(r, keys, Message.create("t.go"), key="k", key_ttl=60)
    r.delete(keys.idempotency("k"))  # what the expiry does
    assert submit(r, keys, Message.create("t.go"), key="k", key_ttl=60).message_id != first.message_id


def test_repeats_at_once_send_exactly_once(redis_url: str, keys: Keys) -> None:
    answers: list[Any] = []
    start = threading.Barrier(8)

    def one() -> None:
        client = redis.Redis.from_url(redis_url)
        start.wait()
        answers.append(submit(client, keys, Message.create("t.go"), key="race", key_ttl=60))
        client.close()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({(a.run_id, a.message_id) for a in answers}) == 1
    assert sorted(a.replayed for a in answers) == [False] + [True] * 7
    assert redis.Redis.from_url(redis_url).xlen(keys.stream()) == 1


# -- HTTP: /send and /api/v1/messages, the fast lane and Flask ---------------------------------------------

@pytest.fixture
def make_app(redis_url: str, keys: Keys, tmp_path: Path) -> Callable[..., Flask]:
    folder = write_config(tmp_path / "config", "- {name: a, triggers: [a.b], command: 'true'}\n")

    def make(lane: bool = True, **overrides: Any) -> Flask:
        fields: dict[str, Any] = dict(redis_url=redis_url, prefix=keys.prefix, config_path=folder,
                                      data_dir=tmp_path / "data")
        fields.update(overrides)
        app = create_app({"SETTINGS": Settings(**fields), "TESTING": True})
        if not lane:
            app.wsgi_app = app.wsgi_app.flask  # type: ignore[attr-defined,method-assign]
        return app
    return make


@pytest.mark.parametrize("lane", [True, False], ids=["fast lane", "flask"])
def test_the_header_replays_the_first_answer(make_app: Callable[..., Flask], r: redis.Redis, keys: Keys,
                                             lane: bool) -> None:
    client = make_app(lane=lane).test_client()
    first = client.post("/send", data=b"msg=a.b&param.N=1", content_type=FORM, headers={"Idempotency-Key": "k-1"})
    again = client.post("/api/v1/messages", json={"msg": "a.b", "params": {"N": "1"}},
                        headers={"Idempotency-Key": '"k-1"'})  # quoted, as the IETF draft writes it
    assert first.status_code == again.status_code == 202
    assert first.get_json() == dict(again.get_json(), replayed=False)
    assert again.get_json()["replayed"] is True and again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert r.xlen(keys.stream()) == 1
    body = client.post("/api/v1/messages", json={"msg": "a.b", "params": {"N": "1"}, "key": "k-1"})
    assert body.get_json()["message_id"] == first.get_json()["message_id"] and body.get_json()["replayed"]
    form = client.post("/send", data=b"msg=a.b&param.N=1&key=k-1", content_type=FORM)
    assert form.headers["Idempotent-Replayed"] == "true" and r.xlen(keys.stream()) == 1
    plain = client.post("/send", data=b"msg=a.b", content_type=FORM)
    assert "replayed" not in plain.get_json()  # without a key the answer is as it always was


BAD = [("too long", {"Idempotency-Key": "x" * 201}, {}), ("control", {"Idempotency-Key": "a\tb"}, {}),
       ("empty header", {"Idempotency-Key": ""}, {}), ("not a string", {}, {"key": 5}),
       ("header and field differ", {"Idempotency-Key": "a"}, {"key": "b"})]


@pytest.mark.parametrize("what,headers,extra", BAD, ids=[b[0] for b in BAD])
@pytest.mark.parametrize("lane", [True, False], ids=["fast lane", "flask"])
def test_a_malformed_key_is_a_400_and_sends_nothing(make_app: Callable[..., Flask], r: redis.Redis, keys: Keys,
                                                    what: str, headers: dict[str, str], extra: dict[str, Any],
                                                    lane: bool) -> None:
    client = make_app(lane=lane).test_client()
    resp = client.post("/api/v1/messages", json={"msg": "a.b", **extra}, headers=headers)
    assert resp.status_code == 400 and "key" in resp.get_json()["error"].lower(), resp.get_json()
    assert r.xlen(keys.stream()) == 0
    assert r.hget(keys.metrics(), "refused:invalid") == b"1"


def test_a_reused_key_is_a_409_with_the_first_answer(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()
    first = client.post("/send", data=b"msg=a.b", content_type=FORM, headers={"Idempotency-Key": "k"}).get_json()
    resp = client.post("/send", data=b"msg=a.c", content_type=FORM, headers={"Idempotency-Key": "k"})
    assert resp.status_code == 409
    assert resp.get_json()["detail"] == {"run_id": first["run_id"], "message_id": first["message_id"]}


def test_the_ttl_is_a_setting(make_app: Callable[..., Flask], r: redis.Redis, keys: Keys) -> None:
    make_app(idempotency_ttl=120.0).test_client().post("/send", data=b"msg=a.b", content_type=FORM,
                                                       headers={"Idempotency-Key": "k"})
    assert 60 < r.ttl(keys.idempotency("k")) <= 120
    assert Settings.from_env({"ANGORA_IDEMPOTENCY_TTL": "2h"}).idempotency_ttl == 7200
    with pytest.raises(Exception, match="IDEMPOTENCY_TTL"):
        Settings.from_env({"ANGORA_IDEMPOTENCY_TTL": "0"})


# -- real processes: `angora send --key` twice, one run -----------------------------------------------------

def test_send_with_a_key_twice_runs_the_workflow_once(angora_env: dict[str, str], tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    jobs = f"""
    - {{name: mark, triggers: [idem.go], command: [sh, -c, 'echo x >> {marks}'], messages: [idem.next]}}
    - {{name: after, triggers: [idem.next], command: "true"}}
    """
    with running(angora_env, jobs, tmp_path) as s:
        def send(*extra: str) -> subprocess.CompletedProcess:
            return s.cli("send", "idem.go", "-p", "N=1", "--key", "order-42", *extra)
        first = send("--json")
        assert first.returncode == 0, first.stderr
        answer = json.loads(first.stdout)
        assert answer["replayed"] is False
        s.wait_run(answer["run_id"])
        again = send()
        assert again.returncode == 0 and again.stdout.strip() == answer["run_id"]
        assert "nothing sent" in again.stderr
        reused = send("-p", "N=2")  # -p given twice: N=2 wins, another message under the same key
        assert reused.returncode != 0 and "another message" in reused.stderr and "Traceback" not in reused.stderr
        bad = s.cli("send", "idem.go", "--key", "x" * 201)
        assert bad.returncode != 0 and "longer than 200" in bad.stderr
        marker = s.send("idem.go")  # a later run: when it is done, nothing from the repeats can still come
        s.wait_run(marker)
        assert marks.read_text().count("x") == 2  # the first send and the marker, not the repeat
        assert len(s.executions(answer["run_id"])) == 2

"""The layout check a role makes before it starts (store/layout.py)."""
from __future__ import annotations

import pytest
import redis

from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.layout import LAYOUT
from angora_rq.core.messages import Message
from angora_rq.store import bus, layout


def test_a_new_deployment_is_marked_with_this_layout(r: redis.Redis, keys: Keys) -> None:
    layout.check(r, keys)
    assert r.get(keys.schema()) == str(LAYOUT).encode()


def test_data_this_release_wrote_before_any_role_started_is_its_own(r: redis.Redis, keys: Keys) -> None:
    bus.send(r, keys, Message.create("go"))
    layout.check(r, keys)
    assert r.get(keys.schema()) == str(LAYOUT).encode()


def test_data_of_layout_1_is_refused_with_what_to_do(r: redis.Redis, keys: Keys) -> None:
    r.hset(keys.run("old"), mapping={"run_id": "old", "created": "1.0", "active": "0"})
    r.zadd(keys.runs(), {"old": 1.0})
    with pytest.raises(AngoraError, match=r"older layout \(1; .*run `angora migrate`"):
        layout.check(r, keys)
    assert not r.exists(keys.schema())


def test_data_of_a_newer_layout_is_refused(r: redis.Redis, keys: Keys) -> None:
    r.set(keys.schema(), LAYOUT + 1)
    with pytest.raises(AngoraError, match="newer layout"):
        layout.check(r, keys)


def test_a_layout_1_execution_with_outputs_or_a_gate_keeps_them_under_their_short_names() -> None:
    """Records flow's code wrote in layout 1 (outputs, an approval gate waiting) convert like the rest."""
    from angora_rq.core import layout as L
    from angora_rq.core.schema import Exec

    old = {"id": "x1", "job": "deploy", "run": "r1", "attempt": "1", "status": "awaiting_approval", "queue": "q",
           "entry": "1-0", "params": "{}", "spec": '{"name": "deploy"}', "config_version": "v1", "created": "1.0",
           "queued": "1.0", "limit": "0", "outputs": '{"A": "1"}', "approval": "", "decided_by": "",
           "approval_deadline": "99.0"}
    fields, spec, version, _ = L.execution(old)
    assert L.is_old_execution(old) and spec == old["spec"] and version == "v1"
    assert fields[Exec.outputs] == '{"A": "1"}' and fields[Exec.approval_deadline] == "99.0"
    assert fields[Exec.status] == "awaiting_approval" and Exec.approval not in fields  # empty fields left out
    assert not {"id", "entry", "queued", "spec", "outputs", "approval_deadline"} & set(fields)

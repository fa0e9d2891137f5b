"""Message validation and stream encoding (pure)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from angora_rq.core.errors import InvalidInput
from angora_rq.core.messages import Message, check_params, check_run_id, check_topic, parse_param_args


@pytest.mark.parametrize("topic", ["", "a..b", ".a", "a.", "a b", "a.*", "a.#", "x" * 300, None, 5])
def test_bad_topics_are_refused(topic: object) -> None:
    with pytest.raises(InvalidInput):
        check_topic(topic)


@pytest.mark.parametrize("topic", ["time.0105", "example.step.1", "a", "a-b_c.d:e/f@g+h=i"])
def test_good_topics(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize("params", [{"1a": "x"}, {"a-b": "x"}, {"a": None}, {"a": ["x"]}, {"a": "\x00"},
                                    {"a": "x" * 5000}, {f"k{i}": "v" for i in range(100)}, "a=b", [1]])
def test_bad_params_are_refused(params: object) -> None:
    with pytest.raises(InvalidInput):
        check_params(params)


def test_params_convert_numbers_to_strings() -> None:
    assert check_params({"N": 3, "F": 1.5}) == {"N": "3", "F": "1.5"}


@pytest.mark.parametrize("run_id", ["", "a b", "a/b", "x" * 65, "é"])
def test_bad_run_ids(run_id: str) -> None:
    with pytest.raises(InvalidInput):
        check_run_id(run_id)


def test_cli_params() -> None:
    assert parse_param_args(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(InvalidInput):
        parse_param_args(["novalue"])


def test_generated_run_ids_are_valid_and_distinct() -> None:
    ids = {Message.create("a").run_id for _ in range(200)}
    assert len(ids) == 200
    assert all(check_run_id(i) for i in ids)


@settings(max_examples=200, deadline=None)
@given(
    topic=st.from_regex(r"[a-z0-9_]{1,8}(\.[a-z0-9_]{1,8}){0,4}", fullmatch=True),
    params=st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
                           st.text(max_size=50).filter(lambda v: "\x00" not in v), max_size=5)
    # Valid params only: names that differ only in case are refused (one ANGORA_PARAM_<NAME> variable).
    .filter(lambda d: len({k.upper() for k in d}) == len(d)),
)
def test_stream_fields_round_trip(topic: str, params: dict[str, str]) -> None:
    m = Message.create(topic, params, origin="cli", now=1.5)
    back = Message.from_fields({k.encode(): v.encode() for k, v in m.to_fields().items()})
    assert back == m
    assert back.is_root

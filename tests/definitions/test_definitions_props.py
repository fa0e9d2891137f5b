"""Property tests of the definitions loader: valid sets round-trip, garbage never crashes it."""
from __future__ import annotations

import shlex
import string
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from angora_rq.definitions.load import load_config, parse_text
from angora_rq.core.errors import DefinitionError
from angora_rq.core.model import Problem

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text a user may write anywhere: no control characters other than tab and newline (YAML refuses most of them).
TEXT = st.text(st.one_of(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), st.sampled_from("\t\n")),
               max_size=40)
SEGMENT = st.text(string.ascii_letters + string.digits + "_-:/@+=", min_size=1, max_size=8)
TOPIC = st.lists(SEGMENT, min_size=1, max_size=4).map(".".join)
PATTERN = st.lists(st.one_of(SEGMENT, st.sampled_from(["*", "#"])), min_size=1, max_size=4).map(".".join)
NAME = st.text(string.ascii_letters + string.digits + "_-. :", min_size=1, max_size=30).filter(
    lambda n: n not in (".", "..") and n == n.strip())
ENV_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)
TEXT_VALUE = st.one_of(TEXT, st.integers(-10**6, 10**6))  # numbers are kept as the text written
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@st.composite
def durations(draw: st.DrawFn, minimum: int) -> tuple[Any, float]:
    """A duration as written in YAML and the seconds it means."""
    n = draw(st.integers(minimum, 10**5))
    kind = draw(st.sampled_from(["int", "float", "unit"]))
    if kind == "int":
        return n, float(n)
    if kind == "float":
        return n / 4, n / 4
    unit = draw(st.sampled_from(sorted(UNITS)))
    return f"{n}{unit}", n * UNITS[unit]


@st.composite
def jobs(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A job as written (a dict for safe_dump) and the JobDef.to_json() it must load as."""
    argv = draw(st.lists(TEXT.filter(lambda t: t != ""), min_size=1, max_size=4))
    written: dict[str, Any] = {"name": name, "triggers": draw(st.lists(PATTERN, min_size=1, max_size=3)),
                               "command": shlex.join(argv) if draw(st.booleans()) else argv}
    expected = dict(written, command=argv, log=None, messages=[], replay=None, parent_success=False,
                    description="", timeout=None, queue="default", env={}, cwd=None, params={},
                    concurrency=None, replay_delay=1.0, on_failure=[],
                    approval=False, approval_timeout=None, on_approval_timeout="reject")
    optional = {
        "log": TEXT, "cwd": TEXT, "description": TEXT, "messages": st.lists(TOPIC, max_size=3),
        "replay": st.one_of(st.none(), st.integers(0, 10**9)), "parent_success": st.booleans(),
        "queue": st.from_regex(r"[A-Za-z0-9_.\-]{1,20}", fullmatch=True),
        "env": st.dictionaries(ENV_NAME, TEXT_VALUE, max_size=3),
        "params": st.dictionaries(ENV_NAME, TEXT_VALUE, max_size=3), "concurrency": st.integers(1, 1000),
    }
    for key in draw(st.sets(st.sampled_from(sorted(optional)))):
        value = draw(optional[key])
        written[key] = value
        expected[key] = {k: str(v) for k, v in value.items()} if isinstance(value, dict) else value
    for key, minimum in (("timeout", 1), ("replay_delay", 0)):
        if draw(st.booleans()):
            written[key], expected[key] = draw(durations(minimum))
    return written, expected


@st.composite
def schedules(draw: st.DrawFn, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A schedule as written and the ScheduleDef.to_json() it must load as."""
    written: dict[str, Any] = {"schedule": name, "message": draw(TOPIC)}
    expected: dict[str, Any] = {"name": name, "message": written["message"], "cron": None, "every": None,
                                "timezone": "UTC", "params": {}, "catchup": "skip", "overlap": "allow",
                                "description": ""}
    if draw(st.booleans()):
        written["cron"] = expected["cron"] = draw(st.sampled_from(["5 1 * * *", "*/5 * * * *", "0 0 1 1 *", "@daily"]))
    else:
        written["every"], expected["every"] = draw(durations(1))
    for key, values in (("timezone", st.sampled_from(["UTC", "Europe/Paris", "America/New_York"])),
                        ("catchup", st.sampled_from(["skip", "once"])),
                        ("overlap", st.sampled_from(["allow", "forbid"])),
                        ("description", TEXT), ("params", st.dictionaries(ENV_NAME, TEXT, max_size=3))):
        if draw(st.booleans()):
            written[key] = expected[key] = draw(values)
    return written, expected


@st.composite
def definition_sets(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Entries to dump (jobs and schedules mixed) and the expected jobs and schedules, in order."""
    names = draw(st.lists(NAME, min_size=1, max_size=6, unique=True))
    entries: list[dict[str, Any]] = []
    want_jobs: list[dict[str, Any]] = []
    want_schedules: list[dict[str, Any]] = []
    for name in names:
        is_schedule = draw(st.integers(0, 3)) == 0
        written, expected = draw(schedules(name) if is_schedule else jobs(name))
        entries.append(written)
        (want_schedules if is_schedule else want_jobs).append(expected)
    return entries, want_jobs, want_schedules


@SETTINGS
@given(definition_sets(), st.booleans(), st.sampled_from([None, False, True]))
def test_valid_definitions_load_and_round_trip(data: tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                           list[dict[str, Any]]],
                                               unicode: bool, flow: bool | None) -> None:
    entries, want_jobs, want_schedules = data
    text = yaml.safe_dump(entries, allow_unicode=unicode, default_flow_style=flow, sort_keys=False)
    got_jobs, got_schedules, problems = parse_text(text, "gen.yml")
    assert problems == [], text
    assert [j.to_json() | {"location": None} for j in got_jobs] == [
        w | {"location": None} for w in want_jobs]
    assert [s.to_json() | {"location": None} for s in got_schedules] == [w | {"location": None}
                                                                          for w in want_schedules]


def check_problems(problems: list[Problem], path: str) -> None:
    """Every problem points somewhere real in the file."""
    for p in problems:
        assert p.location is not None and p.location.path == path
        assert p.location.line >= 1 and p.location.col >= 1
        assert p.message and str(p).startswith(f"{path}:{p.location.line}:{p.location.col}: ")


FRAGMENTS = st.sampled_from([
    "- ", "name: ", "triggers: ", "command: ", "schedule: ", "cron: ", "every: ", "messages: ", "env: ", "params: ",
    "replay: ", "timeout: ", "[", "]", "{", "}", ", ", ": ", "\n", "\n  ", "\n    ", "\t", "&a ", "*a", "&b ", "*b",
    "<<: ", "? ", "!!python/name:os.system ", "!x ", "!!str ", "!!int ", "!!bool ", "'", '"', "#", "---\n", "...\n",
    "a.b", "a.*", "#", "1", "-1", "true", "~", "0b_", "2024-13-45", "1:30", "\\", "%YAML 1.1\n", "|\n", ">\n",
    "é", "\u2028", "\ufeff", "x" * 30, "maybe", "abc", "0x", ".nan", ".inf", "1e999", "5m", "Europe/Paris",
])
KEYS = st.sampled_from(["name", "triggers", "command", "log", "messages", "replay", "parent_success", "description",
                        "timeout", "queue", "env", "cwd", "params", "concurrency", "replay_delay", "schedule",
                        "cron", "every", "timezone", "message", "catchup", "overlap", "<<", "trigers"])
# A valid entry with one key given a random value: reaches every field validator with odd input.
ODD_FIELD = st.builds("- name: a\n  triggers: [t]\n  command: ls\n  {}: {}\n".format,
                      KEYS, st.lists(FRAGMENTS, max_size=8).map("".join))
ODD_SCHEDULE = st.builds("- schedule: s\n  every: 1h\n  message: m\n  {}: {}\n".format,
                         KEYS, st.lists(FRAGMENTS, max_size=8).map("".join))


@SETTINGS
@given(st.one_of(st.text(max_size=200), st.lists(FRAGMENTS, max_size=60).map("".join), ODD_FIELD, ODD_SCHEDULE))
def test_garbage_text_only_ever_gives_located_problems(text: str) -> None:
    jobs, schedules, problems = parse_text(text, "junk.yml")
    check_problems(problems, "junk.yml")
    assert isinstance(jobs, list) and isinstance(schedules, list)


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.lists(FRAGMENTS, max_size=60).map(lambda f: "".join(f).encode())))
def test_garbage_files_raise_only_definition_errors(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "junk.yml")
        path.write_bytes(data)
        try:
            config = load_config(folder)
        except DefinitionError as err:
            assert err.problems
            check_problems(err.problems, str(path))
        else:
            check_problems(list(config.warnings), str(path))

"""Logs: the roles write one line per event on stdout, as text, JSON or logfmt (ANGORA_LOG_FORMAT)."""
from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
from pathlib import Path

import pytest

from angora_rq.core.errors import AngoraError
from angora_rq.core.settings import Settings
from angora_rq.processes.logs import JsonFormatter, LogfmtFormatter, logfmt_value
from angora_testkit import CLI, write_config


def record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    """A log record as `logging` makes it, with a traceback when `exc`."""
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nvalue")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("angora_rq.processes.worker", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_json_is_one_line_per_event_traceback_included() -> None:
    line = JsonFormatter().format(record("worker %s: lost %d\nsecond line", "w1", 2, exc=True))
    assert "\n" not in line
    event = json.loads(line)
    assert event["level"] == "warning" and event["logger"] == "angora_rq.processes.worker"
    assert event["msg"] == "worker w1: lost 2\nsecond line"
    assert "Traceback" in event["exc"] and "ValueError: bad" in event["exc"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", event["time"])


def test_logfmt_quotes_what_needs_it_and_stays_on_one_line() -> None:
    line = LogfmtFormatter().format(record('say "hi" = %s', "x\\y", exc=True))
    assert "\n" not in line
    assert line.startswith("time=") and " level=warning logger=angora_rq.processes.worker pid=" in line
    assert ' msg="say \\"hi\\" = x\\\\y" exc="Traceback' in line
    assert logfmt_value("plain") == "plain" and logfmt_value("") == '""' and logfmt_value("a b") == '"a b"'


def test_log_format_setting_is_checked() -> None:
    assert Settings.from_env({"ANGORA_LOG_FORMAT": "JSON"}).log_format == "json"
    assert Settings.from_env({}).log_format == "text"
    with pytest.raises(AngoraError, match="ANGORA_LOG_FORMAT='xml': use one of text, json, logfmt"):
        Settings.from_env({"ANGORA_LOG_FORMAT": "xml"})


@pytest.mark.parametrize("fmt", ["json", "logfmt"])
def test_roles_log_events_on_stdout(fmt: str, angora_env: dict[str, str], tmp_path: Path) -> None:
    config = write_config(tmp_path / "config", "- {name: a, triggers: [a], command: 'true'}\n")
    env = dict(angora_env, ANGORA_LOG_FORMAT=fmt, ANGORA_CONFIG=str(config))
    procs = {role: subprocess.Popen([*CLI, role], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True) for role in ("matcher", "worker", "scheduler")}
    try:
        # Up to the role's start line (its signal handlers are set by then); warnings on Redis' setup may come first.
        first = {role: until_started(p, role) for role, p in procs.items()}
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        outs = {role: p.communicate(timeout=30) for role, p in procs.items()}
    for role, head in first.items():
        out, err = outs[role]
        assert procs[role].returncode == 0 and err == "", (role, err)
        lines = [*head, *out.splitlines()]
        if fmt == "json":
            events = [json.loads(x) for x in lines]
            started = [e for e in events if e["msg"].startswith(f"{role} ")]
            assert started and started[0]["level"] == "info", events
        else:
            assert all(x.startswith("time=") and " msg=" in x for x in lines)
            assert any(f'msg="{role} ' in x for x in lines)


def until_started(proc: subprocess.Popen, role: str) -> list[str]:
    """The lines `proc` logs up to its start line (the one naming its role), that one included."""
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        if f"{role} " in line:
            break
    return lines


def test_one_shot_commands_keep_stdout_for_their_answer(angora_env: dict[str, str]) -> None:
    out = subprocess.run([*CLI, "--log-level", "DEBUG", "send", "a.b"], env=dict(angora_env, ANGORA_LOG_FORMAT="json"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (run_id,) = out.stdout.splitlines()  # the answer alone; the logs went to stderr
    assert " " not in run_id and "{" not in out.stdout and json.loads(out.stderr.splitlines()[0])["level"] == "debug"

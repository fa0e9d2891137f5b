"""What the CLI prints: executions per job, the runs footer on stdout, schedules never sent, validate's counts and
warnings with errors; and the log line of a refused reload."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from angora_rq.cli import main
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings
from angora_rq.definitions.source import ConfigSource
from angora_rq.store.connection import connect
from angora_rq.store.control import Control

ROOT = Path(__file__).resolve().parents[2]
JOBS = """\
- {name: a, triggers: [go], command: "true", messages: [a.done]}
- {name: b, triggers: [a.done], command: "true"}
- {schedule: nightly, cron: "5 1 * * *", message: go}
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "jobs.yml").write_text(JOBS)
    return folder


def cli(redis_url: str, keys: Keys, *args: str) -> Result:
    env = {"REDIS_URL": redis_url, "ANGORA_PREFIX": keys.prefix}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_status_of_a_run_shows_how_often_each_job_ran(redis_url: str, keys: Keys, config: Path) -> None:
    settings = Settings(redis_url=redis_url, prefix=keys.prefix, config_path=config)
    control = Control(connect(settings), keys, settings)
    snap = ConfigSource(config).current()
    run_id = control.run_job(snap, "a")["run_id"]
    for _ in range(2):
        control.run_job(snap, "a", run_id=run_id)
    out = cli(redis_url, keys, "status", run_id).output
    line_a = next(line for line in out.splitlines() if line.strip().startswith("a "))
    assert "3 executions" in line_a
    assert "execution" not in next(line for line in out.splitlines() if line.strip().startswith("b "))


def test_the_runs_footer_goes_to_stdout_after_the_runs(redis_url: str, keys: Keys, config: Path) -> None:
    settings = Settings(redis_url=redis_url, prefix=keys.prefix, config_path=config)
    control = Control(connect(settings), keys, settings)
    snap = ConfigSource(config).current()
    ids = [control.run_job(snap, "a")["run_id"] for _ in range(2)]
    lines = cli(redis_url, keys, "status").stdout.splitlines()
    assert lines[-1] == "(2 of 2 runs)"
    assert {line.split()[0] for line in lines[:-1]} == set(ids)


def test_schedules_never_sent_say_never(redis_url: str, keys: Keys, config: Path) -> None:
    out = cli(redis_url, keys, "schedules", "--config", str(config)).output
    line = next(line for line in out.splitlines() if line.startswith("nightly"))
    assert "never sent" in line and "sent 0" not in line


def test_validate_with_errors_counts_the_jobs_and_keeps_the_warnings(tmp_path: Path) -> None:
    (tmp_path / "jobs.yml").write_text(
        "- {name: a, triggers: [go], command: 'true', messages: [nobody.listens]}\n"
        "- {name: b, triggers: [x], comand: 'true'}\n"
        "- {name: c, triggers: [y], command: 'true'}\n")
    res = CliRunner().invoke(main, ["validate", "--config", str(tmp_path)])
    assert res.exit_code == 1
    assert "job 'b': unknown key 'comand'" in res.output
    assert "job 'a': message 'nobody.listens' has no job listening to it" in res.output
    assert res.output.strip().splitlines()[-1] == "3 jobs, 0 schedules, 2 errors, 1 warnings"


def test_validate_does_not_warn_about_entry_jobs() -> None:
    """The repository's own config: entry jobs (step_1, etl_fetch, ...) are normal; the one warning is on purpose."""
    res = CliRunner().invoke(main, ["validate", "--config", str(ROOT / "config")])
    assert res.exit_code == 0, res.output
    assert "0 errors, 1 warnings" in res.output and "shell.print.message.test" in res.output


def test_a_refused_reload_logs_each_problem_on_its_own_line(config: Path, caplog: pytest.LogCaptureFixture
                                                            ) -> None:
    source = ConfigSource(config)
    (config / "jobs.yml").write_text("- {name: a, triggers: [go], comand: 'true'}\n")
    with caplog.at_level(logging.ERROR, logger="angora_rq.definitions.source"):
        assert source.reload()[0] is False
    message = caplog.records[-1].getMessage()
    assert "error(s) in job definitions:\n" in message
    assert any(line.startswith(str(config / "jobs.yml") + ":1:") for line in message.splitlines())


def test_a_failed_job_s_lines_say_how_it_ended_and_end_with_its_output() -> None:
    from angora_rq.cli.engine_cmds import TAIL_LINES, failure_lines

    view = {"id": "x1", "status": "failed", "reason": "exit", "exit_code": 2, "attempt": 3,
            "tail": "".join(f"line {i}\n" for i in range(20))}
    lines = failure_lines(view)
    assert lines[0] == "    exit 2 after 3 attempts; the whole output: angora logs x1"
    assert lines[1:] == [f"    | line {i}" for i in range(20 - TAIL_LINES, 20)]
    timed_out = failure_lines({"id": "x2", "status": "failed", "reason": "timeout", "exit_code": None,
                               "attempt": 1, "tail": None})
    assert timed_out == ["    timeout after 1 attempt; the whole output: angora logs x2"]
    assert failure_lines({"id": "x3", "status": "killed", "reason": "", "attempt": None})[0].startswith(
        "    killed after 1 attempt")
    assert failure_lines({"id": "x4", "status": "failed", "reason": "spawn_error", "attempt": 1})[0].startswith(
        "    spawn error after")

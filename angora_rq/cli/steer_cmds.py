"""Steering commands, the UI's buttons on the command line: kill, retry, skip, rerun, logs (cancel: ops_cmds).

Each is a thin layer over store/control.py (or store/queries.py for logs), the code the API calls; `--json`
prints what the API answers, for scripts.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click

from angora_rq.cli.engine_cmds import _env, config_option
from angora_rq.cli.group import main
from angora_rq.core.schema import SUCCEEDED, WAITING, Status
from angora_rq.store.connection import redis_errors

json_option = click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (as the API's).")
LIVE = WAITING | {Status.running}
ANCHOR = 1024  # characters of the tail already shown that `logs --follow` looks for in the next one


def _control(ctx: click.Context) -> Any:
    from angora_rq.store.control import Control

    s, r, keys = _env(ctx)
    return Control(r, keys, s)


def _emit(answer: dict[str, Any], as_json: bool, text: str) -> None:
    click.echo(json.dumps(answer, indent=2) if as_json else text)


@main.command()
@click.argument("execution_id")
@json_option
@click.pass_context
def kill(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """Kill a running execution (its whole process group) or drop a waiting one."""
    with redis_errors():
        result = _control(ctx).kill(execution_id)
    _emit({"execution_id": execution_id, "result": result}, as_json, f"{execution_id}: {result}")


@main.command()
@click.argument("execution_id")
@json_option
@click.pass_context
def retry(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """Run a finished execution again as a new attempt; prints the new execution id."""
    with redis_errors():
        new = _control(ctx).retry(execution_id)
    _emit({"execution_id": new, "retry_of": execution_id}, as_json, new)


@main.command()
@click.argument("execution_id")
@json_option
@click.pass_context
def skip(ctx: click.Context, execution_id: str, as_json: bool) -> None:
    """Mark a failed execution succeeded (`skipped`) so its children run."""
    with redis_errors():
        _control(ctx).skip(execution_id)
    _emit({"execution_id": execution_id, "status": Status.skipped}, as_json, f"{execution_id}: skipped")


@main.command()
@click.argument("run_id")
@click.option("--failed", is_flag=True, help="Run the failed, killed and canceled jobs again, in the same run.")
@json_option
@config_option
@click.pass_context
def rerun(ctx: click.Context, run_id: str, failed: bool, as_json: bool, config_path: Optional[Path]) -> None:
    """Re-run a run: a new run of its root message and params (prints the new run id), or its failed jobs."""
    from angora_rq.definitions.source import ConfigSource

    control = _control(ctx)
    snap = ConfigSource(config_path or control.settings.config_path).current()
    with redis_errors():
        answer = (control.rerun_failed if failed else control.rerun)(snap, run_id)
    if failed:
        lines = [f"{e['job']:30} {e['execution_id']} (again after {e['rerun_of']})" for e in answer["executions"]]
        _emit(answer, as_json, "\n".join(lines))
    else:
        _emit(answer, as_json, answer["run_id"])


@main.command()
@click.argument("execution_id")
@click.option("-f", "--follow", is_flag=True, help="Keep printing the output until the execution ends; the exit "
              "status then says whether it succeeded (0) or not (1).")
@click.option("--interval", type=float, default=0.5, show_default=True, help="With --follow: seconds between reads.")
@json_option
@click.pass_context
def logs(ctx: click.Context, execution_id: str, follow: bool, interval: float, as_json: bool) -> None:
    """Print an execution's output: the last 64 KiB kept in Redis (updated every second while it runs)."""
    from angora_rq.store.queries import Queries

    if as_json and follow:
        raise click.UsageError("--json prints the output once; --follow keeps printing it: choose one")
    _, r, keys = _env(ctx)
    q = Queries(r, keys)
    with redis_errors():
        view = q.execution(execution_id)
    if as_json:
        click.echo(json.dumps({"execution_id": execution_id, "status": view["status"], "host": view["host"],
                               "tail": view["tail"]}))
        return
    shown = view["tail"] or ""
    click.echo(shown, nl=False)
    while follow and view["status"] in LIVE:
        time.sleep(interval)
        with redis_errors():
            view = q.execution(execution_id)
        text = view["tail"] or ""
        click.echo(tail_delta(shown, text), nl=False)
        shown = text
    if follow:
        where = f" on {view['host']}" if view["host"] else ""
        click.echo(f"[{execution_id}: {view['status']}{where}]", err=True)
        sys.exit(0 if view["status"] in SUCCEEDED else 1)


def tail_delta(shown: str, tail: str) -> str:
    """What a later tail of an output adds to the tail already shown.

    Output only grows, but Redis keeps its last 64 KiB, whose start moves once the output is longer: the end of
    what was shown is looked for in the new tail. When it has scrolled out of it, a marker says output was missed.
    """
    if tail.startswith(shown):
        return tail[len(shown):]
    anchor = shown[-ANCHOR:]
    at = tail.find(anchor) if anchor else -1
    if at >= 0:
        return tail[at + len(anchor):]
    return "\n[... output missed: it scrolled past the 64 KiB kept ...]\n" + tail

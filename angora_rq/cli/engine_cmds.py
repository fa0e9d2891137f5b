"""Engine commands: send, matcher, worker, status, run."""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

import click

from angora_rq.cli import checks
from angora_rq.cli.group import main, settings_from
from angora_rq.store.connection import connect, redis_errors
from angora_rq.core.keys import Keys
from angora_rq.core.messages import Message, parse_param_args

config_option = click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="ANGORA_CONFIG",
                             default=None, help="Definitions folder or file [default: ./config].")
log = logging.getLogger("angora_rq.cli")
param_option = click.option("-p", "--param", "params", multiple=True, metavar="KEY=VALUE", help="Message parameter.")


def _env(ctx: click.Context) -> tuple[Any, Any, Keys]:
    s = settings_from(ctx)
    return s, connect(s), Keys(s.prefix)


def _on_stop(fn: Any) -> None:
    signal.signal(signal.SIGTERM, fn)
    signal.signal(signal.SIGINT, fn)


@main.command()
@click.argument("topic")
@param_option
@click.option("--run-id", default=None, help="Run id (default: a new one).")
@click.option("--key", default=None, help="Idempotency key: a repeat within ANGORA_IDEMPOTENCY_TTL (24 h) sends "
              "nothing and prints the first send's run id.")
@click.option("--wait", is_flag=True, help="Follow the run until every planned job has finished.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option("--json", "as_json", is_flag=True, help="Print {run_id, message_id[, replayed]} as JSON.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="ANGORA_CONFIG", default=None,
              hidden=True)
@click.pass_context
def send(ctx: click.Context, topic: str, params: tuple[str, ...], run_id: Optional[str], key: Optional[str],
         wait: bool, timeout: Optional[float], as_json: bool, config_path: Optional[Path]) -> None:
    """Send a message; prints its run id."""
    from angora_rq.core.messages import check_idempotency_key
    from angora_rq.store.bus import submit
    from angora_rq.store.pressure import Pressure
    from angora_rq.store.replication import wait_command

    if as_json and wait:
        raise click.UsageError("--json prints one JSON answer; --wait follows the run as text: choose one")
    s, r, keys = _env(ctx)
    msg = Message.create(topic, parse_param_args(params), run_id, origin="cli")
    idem = check_idempotency_key(key) if key is not None else ""
    with redis_errors():
        sent = submit(r, keys, msg, Pressure(r, keys, s).budget(), idem, s.idempotency_ttl, wait=wait_command(s))
    if as_json:
        click.echo(json.dumps({"run_id": sent.run_id, "message_id": sent.message_id,
                               **({"replayed": sent.replayed} if idem else {})}))
    else:
        click.echo(sent.run_id)
    if sent.replayed:
        click.echo(f"(a repeat of key {idem!r}: nothing sent; run {sent.run_id} is the first send's)", err=True)
    if wait:
        sys.exit(follow_run(r, keys, sent.run_id, timeout))


FAILED_JOB = frozenset({"failed", "killed"})  # a job whose own command failed: worth saying why
TAIL_LINES = 5


def failure_lines(view: dict[str, Any], indent: str = "    ") -> list[str]:
    """Why an execution failed, for `send --wait` and `status`: how it ended, where to read the rest, its output's
    last lines."""
    reason, code = view.get("reason") or "", view.get("exit_code")
    how = f"exit {code}" if reason == "exit" and code is not None else (reason.replace("_", " ") or view["status"])
    attempts = int(view.get("attempt") or 1)
    lines = [f"{indent}{how} after {attempts} attempt{'s' if attempts != 1 else ''}; the whole output: "
             f"angora logs {view['id']}"]
    tail = (view.get("tail") or "").rstrip("\n").splitlines()[-TAIL_LINES:]
    return lines + [f"{indent}| {line}" for line in tail]


def echo_failure(q: Any, info: dict[str, Any], indent: str = "    ") -> None:
    """After a job's line: why it failed, when its own command did (failure_lines)."""
    from angora_rq.core.errors import NotFound

    if info["status"] not in FAILED_JOB or not info.get("execution"):
        return
    try:
        with redis_errors():
            click.echo("\n".join(failure_lines(q.execution(info["execution"]), indent)))
    except NotFound:  # dropped meanwhile (retention): its status says enough
        pass


def follow_run(r: Any, keys: Keys, run_id: str, timeout: Optional[float]) -> int:
    """Print each job's outcome as the run goes (a failed one with why); 0 when the run succeeded, 1 when it
    failed, 2 on timeout."""
    from angora_rq.store.queries import Queries
    from angora_rq.core.runs import is_terminal

    q, shown, deadline = Queries(r, keys), set(), None if timeout is None else time.monotonic() + timeout
    while True:
        with redis_errors():
            run = q.run(run_id)
        for name, info in run["jobs"].items():
            if name not in shown and is_terminal(info["status"]):
                shown.add(name)
                click.echo(f"{name:30} {info['status']}")
                echo_failure(q, info)
        if run["active"] == 0 and run["status"] not in ("running", "queued"):
            click.echo(f"run {run_id}: {run['status']}")
            return 0 if run["status"] == "succeeded" else 1
        if deadline is not None and time.monotonic() > deadline:
            click.echo(f"run {run_id}: still {run['status']} after {timeout}s", err=True)
            return 2
        time.sleep(0.1)


@main.command()
@config_option
@click.option("--batch", default=100, show_default=True, help="Entries read per batch.")
@click.option("--name", default=None, help="Consumer name (default host.pid.random).")
@click.pass_context
def matcher(ctx: click.Context, config_path: Optional[Path], batch: int, name: Optional[str]) -> None:
    """Run a matcher: turn messages into executions (any number may run)."""
    from angora_rq.definitions.reload import Reloader
    from angora_rq.definitions.source import ConfigSource
    from angora_rq.processes.matcher import Matcher
    from angora_rq.store.reloads import reload_requests

    s, r, keys = _env(ctx)
    checks.definitions_ready(config_path or s.config_path)
    checks.redis_ready(s, r)
    source = ConfigSource(config_path or s.config_path, freeze=True)
    reloader = Reloader(reload_requests(r, keys), source)  # SIGHUP, `angora reload`, the API, or changed files
    m = Matcher(r, keys, s, reloader.current, name=name, batch_size=batch)
    _on_stop(m.stop)
    signal.signal(signal.SIGHUP, reloader.request)
    log.info("matcher %s: %d jobs, version %s", m.name, len(source.current().config.jobs), source.current().version)
    m.run()


@main.command()
@click.option("-q", "--queue", "queues", multiple=True, help="Queue to serve (repeatable) [default: default].")
@click.option("--burst", is_flag=True, help="Exit when there is no more work.")
@click.option("-c", "--concurrency", type=int, default=None, envvar="ANGORA_WORKER_CONCURRENCY",
              help="Commands run at once [default: 8].")
@click.option("--name", default=None, help="Worker name (default host.pid.random).")
@click.option("--grace", type=float, default=10.0, show_default=True,
              help="On SIGTERM, seconds to let running commands finish before handing them back.")
@click.pass_context
def worker(ctx: click.Context, queues: tuple[str, ...], burst: bool, concurrency: Optional[int],
           name: Optional[str], grace: float) -> None:
    """Run a worker: execute the commands of the given queues."""
    from angora_rq.processes.worker import AngoraWorker

    s, r, keys = _env(ctx)
    checks.redis_ready(s, r)
    w = AngoraWorker(r, keys, s, queues=queues or ("default",), concurrency=concurrency, name=name,
                     burst=burst, stop_grace=grace)
    _on_stop(w.request_stop)
    log.info("worker %s: queues %s, concurrency %d", w.name, ", ".join(w.queues), w.concurrency)
    w.run()


@main.command()
@click.argument("run_id", required=False)
@click.option("--limit", default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, run_id: Optional[str], limit: int, as_json: bool) -> None:
    """Show a run (its plan and every job's status), or the latest runs."""
    from angora_rq.store.queries import Queries

    _, r, keys = _env(ctx)
    q = Queries(r, keys)
    with redis_errors():
        if run_id:
            run = q.run(run_id)
            if as_json:
                click.echo(json.dumps(run, indent=2))
                return
            click.echo(f"run {run_id}: {run['status']}  (topic {run['topic']}, active {run['active']})")
            for name, info in run["jobs"].items():
                n = info["executions"]
                ran = f"{n} execution{'' if n == 1 else 's'}" if n else ""
                click.echo(f"  {name:30} {info['status']:16} {ran:14} {info['execution'] or ''}".rstrip())
                echo_failure(q, info, indent="      ")
            return
        total, runs = q.runs(limit=limit)
    if as_json:
        click.echo(json.dumps(runs, indent=2))
        return
    for run in runs:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(run["created"] or 0))
        click.echo(f"{run['run_id']:32} {run['status']:12} {when}  {run['topic']}")
    click.echo(f"({len(runs)} of {total} runs)")


@main.command("run")
@click.argument("job")
@param_option
@click.option("--run-id", default=None, help="Run inside this run (needed for parent_success jobs).")
@config_option
@click.pass_context
def run_cmd(ctx: click.Context, job: str, params: tuple[str, ...], run_id: Optional[str],
            config_path: Optional[Path]) -> None:
    """Run a job by hand now; prints the run id and execution id."""
    from angora_rq.definitions.source import ConfigSource
    from angora_rq.store.control import Control

    s, r, keys = _env(ctx)
    snap = ConfigSource(config_path or s.config_path).current()
    with redis_errors():
        out = Control(r, keys, s).run_job(snap, job, parse_param_args(params), run_id)
    click.echo(f"{out['run_id']} {out['execution_id']}")

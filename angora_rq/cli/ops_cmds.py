"""Operations commands: scheduler, schedules, pause, resume, paused, cancel, approve, reject, reload, migrate."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

import click

from angora_rq.cli import checks
from angora_rq.cli.group import main
from angora_rq.cli.engine_cmds import _env, _on_stop, config_option
from angora_rq.store.connection import redis_errors


def _source(path: Optional[Path], settings: Any) -> Any:
    from angora_rq.definitions.source import ConfigSource

    return ConfigSource(path or settings.config_path)


def _when(ts: Optional[float]) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@main.command()
@config_option
@click.option("--name", default=None, help="Scheduler name (default host.pid.random).")
@click.pass_context
def scheduler(ctx: click.Context, config_path: Optional[Path], name: Optional[str]) -> None:
    """Run a scheduler: send each schedule's message on its ticks and deliver webhooks (any number may run; one
    leads)."""
    import signal

    from angora_rq.definitions.reload import Reloader
    from angora_rq.processes.scheduler import Scheduler
    from angora_rq.processes.webhooks import WebhookSender
    from angora_rq.store.reloads import reload_requests

    s, r, keys = _env(ctx)
    checks.definitions_ready(config_path or s.config_path)
    checks.redis_ready(s, r)
    source = _source(config_path, s)
    reloader = Reloader(reload_requests(r, keys), source)
    sched = Scheduler(r, keys, s, lambda: reloader.current().config, name=name)
    # Webhooks go out from a thread of the leading scheduler; it reads the definitions the scheduler's checks keep.
    sender = WebhookSender(r, keys, lambda: source.current().config.webhooks)
    sender.start(lambda: sched.is_leader)
    _on_stop(sched.stop)
    signal.signal(signal.SIGHUP, reloader.request)
    config = source.current().config
    logging.getLogger("angora_rq.cli").info("scheduler %s: %d schedules, version %s", sched.name,
                                            len(config.schedules), config.version)
    sched.run()


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedules(ctx: click.Context, config_path: Optional[Path], as_json: bool) -> None:
    """Show every schedule: when it fires next, the last tick sent, and which scheduler leads."""
    from angora_rq.store.schedules import leader_status, schedule_status

    s, r, keys = _env(ctx)
    snap = _source(config_path, s).current()
    with redis_errors():
        rows = schedule_status(r, keys, snap)
        leader = leader_status(r, keys)
    if as_json:
        click.echo(json.dumps({"leader": leader, "schedules": rows}, indent=2))
        return
    for row in rows:
        when = f"cron {row['cron']} ({row['timezone']})" if row["cron"] else f"every {row['every']:g}s"
        # What was sent, as the Schedules page says it (a tick only marked as the baseline sent nothing).
        sent = (f"last sent {_when(row['last_sent_at'])} ({row['sent']} sent, {row['skipped']} skipped)"
                if row["last_sent_at"] is not None else f"never sent ({row['skipped']} skipped)")
        click.echo(f"{row['name']:24} {row['message']:28} {when:32} next {_when(row['next_fire'])}  {sent}")
        if row["last_skipped"] is not None:
            click.echo(f"{'':24} last skipped {_when(row['last_skipped'])}: {row['skip_reason']}")
    lead = f"{leader['holder']} (token {leader['token']})" if leader["holder"] else "none: no scheduler is running"
    click.echo(f"({len(rows)} schedules; leader: {lead})", err=True)


def _job_names(config_path: Optional[Path], settings: Any) -> Optional[list[str]]:
    """Defined job names, or None when the definitions cannot be read (pausing still works by name)."""
    from angora_rq.definitions.source import optional_source
    from angora_rq.core.errors import AngoraError

    try:
        source = optional_source(config_path or settings.config_path)
    except AngoraError:
        return None
    return None if source is None else [j.name for j in source.current().config.jobs]


def _pause_or_resume(ctx: click.Context, pause: bool, job: Optional[str], queue: Optional[str],
                     config_path: Optional[Path]) -> None:
    from angora_rq.store import pausing

    if bool(job) == bool(queue):
        raise click.UsageError("give a JOB or --queue QUEUE (one of them)")
    s, r, keys = _env(ctx)
    with redis_errors():
        if queue:
            out = (pausing.pause_queue if pause else pausing.resume_queue)(r, keys, queue)
            what = f"queue {queue}"
        else:
            assert job is not None
            pausing.check_job(job, _job_names(config_path, s))
            out = (pausing.pause_job if pause else pausing.resume_job)(r, keys, job)
            what = f"job {job}"
    state = "paused" if pause else "resumed"
    note = "" if out["changed"] else f" (was already {'paused' if pause else 'running'})"
    released = f"; {out['released']} held execution(s) queued" if out.get("released") else ""
    click.echo(f"{what} {state}{note}{released}")


@main.command()
@click.argument("job", required=False)
@click.option("-q", "--queue", default=None, help="Pause a queue instead: its workers stop taking executions.")
@config_option
@click.pass_context
def pause(ctx: click.Context, job: Optional[str], queue: Optional[str], config_path: Optional[Path]) -> None:
    """Pause a job (its triggered executions are held, in order) or a queue. Running commands go on."""
    _pause_or_resume(ctx, True, job, queue, config_path)


@main.command()
@click.argument("job", required=False)
@click.option("-q", "--queue", default=None, help="Resume a queue instead.")
@config_option
@click.pass_context
def resume(ctx: click.Context, job: Optional[str], queue: Optional[str], config_path: Optional[Path]) -> None:
    """Resume a job (what it held is queued, in order) or a queue."""
    _pause_or_resume(ctx, False, job, queue, config_path)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def paused(ctx: click.Context, as_json: bool) -> None:
    """List paused jobs (with how many executions each holds) and paused queues."""
    from angora_rq.store.pausing import paused as paused_view

    _, r, keys = _env(ctx)
    with redis_errors():
        view = paused_view(r, keys)
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    for j in view["jobs"]:
        click.echo(f"job   {j['name']:30} {j['held']} held")
    for q in view["queues"]:
        click.echo(f"queue {q['name']:30} {q['waiting']} waiting")
    if not view["jobs"] and not view["queues"]:
        click.echo("nothing is paused")


@main.command()
@click.option("--resend", "entry", metavar="ENTRY", help="Send this dead letter's message again, in a new run.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def dead_letters(ctx: click.Context, entry: Optional[str], as_json: bool) -> None:
    """List the messages the matchers put aside as dead letters (newest first): each failed to dispatch alone.
    With --resend ENTRY, send one's message again (prints the new run id) and take it off the list."""
    from angora_rq.store.deadletters import read_dead_letters, resend
    from angora_rq.store.pressure import Pressure

    settings, r, keys = _env(ctx)
    if entry is not None:
        with redis_errors():
            sent = resend(r, keys, entry, Pressure(r, keys, settings).budget())
        answer = {"run_id": sent.run_id, "message_id": sent.message_id, "replayed": sent.replayed}
        click.echo(json.dumps(answer, indent=2) if as_json else sent.run_id)
        return
    with redis_errors():
        records, total = read_dead_letters(r, keys)
    if as_json:
        click.echo(json.dumps({"total": total, "dead_letters": records}, indent=2))
        return
    for x in records:
        topic = x.get("fields", {}).get("t", "?")
        click.echo(f"{_when(x.get('at'))}  {x.get('entry', '?')}  {topic[:60]}  {x.get('error', '')[:200]}")
    kept = f"{len(records)} kept" if records else "no dead letters kept"
    click.echo(f"{kept} ({total} in all)" if total else kept)


@main.command()
@click.argument("run_id")
@click.option("--kill", is_flag=True, help="Also kill the run's running commands (else they finish).")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON (as the API's).")
@click.pass_context
def cancel(ctx: click.Context, run_id: str, kill: bool, as_json: bool) -> None:
    """Cancel a run: no further job of it starts, its waiting executions are dropped now."""
    from angora_rq.store.control import Control

    s, r, keys = _env(ctx)
    with redis_errors():
        out = Control(r, keys, s).cancel_run(run_id, kill=kill)
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    killing = f"; kill requested for {len(out['kill_requested'])} running" if kill else ""
    click.echo(f"run {run_id} canceled: {len(out['dropped'])} waiting execution(s) dropped{killing}")


def _decide(ctx: click.Context, execution_id: str, approve: bool, by: Optional[str], as_json: bool) -> None:
    import getpass
    import socket

    from angora_rq.store.control import Control

    s, r, keys = _env(ctx)
    who = by or f"{getpass.getuser()}@{socket.gethostname()}"
    with redis_errors():
        out = Control(r, keys, s).decide(execution_id, approve, who)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(f"execution {execution_id} {out['approval']} by {who}: now {out['status']}")


by_option = click.option("--by", default=None, help="Who decides [default: user@host].")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@main.command()
@click.argument("execution_id")
@by_option
@json_option
@click.pass_context
def approve(ctx: click.Context, execution_id: str, by: Optional[str], as_json: bool) -> None:
    """Approve an execution awaiting approval (its job has `approval: true`): it is queued."""
    _decide(ctx, execution_id, True, by, as_json)


@main.command()
@click.argument("execution_id")
@by_option
@json_option
@click.pass_context
def reject(ctx: click.Context, execution_id: str, by: Optional[str], as_json: bool) -> None:
    """Reject an execution awaiting approval: it ends `rejected` (its run fails, its on_failure follows)."""
    _decide(ctx, execution_id, False, by, as_json)


@main.command()
@config_option
@click.pass_context
def reload(ctx: click.Context, config_path: Optional[Path]) -> None:
    """Make every matcher, scheduler and web process read its definition files again (on every host)."""
    from angora_rq.definitions.load import validate
    from angora_rq.store.reloads import request_reload

    s, r, keys = _env(ctx)
    path = Path(config_path or s.config_path)
    summary = f"(no definitions at {path} on this host to check)"
    if path.exists():
        config, problems = validate(path)
        if config is None:
            for p in problems:
                click.echo(str(p), err=True)
            raise click.ClickException(f"{path}: the definitions have errors; nothing reloaded, the running "
                                       "processes keep the definitions they have")
        summary = (f"{path} is version {config.version} with {len(config.jobs)} jobs and "
                   f"{len(config.schedules)} schedules")
    with redis_errors():
        n = request_reload(r, keys)
    click.echo(f"reload requested (#{n}): {summary}; processes switch within a few seconds")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def migrate(ctx: click.Context, as_json: bool) -> None:
    """Convert the data of the previous layout under the prefix in place (every Angora process stopped first)."""
    from angora_rq.store.migrate import migrate as run_migration

    s, r, keys = _env(ctx)
    checks.redis_ready_for_migration(s, r)
    with redis_errors():
        done = run_migration(r, keys)
    if as_json:
        click.echo(json.dumps(done.to_json()))
        return
    click.echo(f"prefix {keys.prefix!r} is in layout {done.layout}: {done.executions} execution(s), {done.runs} "
               f"run(s), {done.jobs} job(s) converted; {done.rq_jobs_dropped} RQ job(s) of succeeded executions "
               f"and {done.dedupe_keys_dropped} dedupe key(s) dropped; {done.queued_moved} queued id(s) moved to "
               "the prefix's own RQ queues")

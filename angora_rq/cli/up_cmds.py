"""`angora up`: the whole system in one command (embedded Redis, matcher, workers, scheduler, web)."""
from __future__ import annotations

import os
import shlex
import signal
import sys
from pathlib import Path
from typing import Optional

import click

from angora_rq.cli import checks
from angora_rq.cli.group import main, settings_from
from angora_rq.cli.web_cmds import check_exposure, choose_host
from angora_rq.processes.redis_server import RedisServer, which_redis_server
from angora_rq.core.settings import Settings, redacted
from angora_rq.processes.supervisor import Policy, ProcSpec, Supervisor


def role_argv(role: str, overrides: dict[str, list[str]]) -> list[str]:
    """argv of one role: `python -m angora_rq.cli <role>` with this interpreter, unless a test overrides it."""
    return list(overrides.get(role) or [sys.executable, "-m", "angora_rq.cli", role])


def parse_overrides(items: tuple[str, ...]) -> dict[str, list[str]]:
    """`ROLE=COMMAND` pairs (hidden test option) into argv lists."""
    out: dict[str, list[str]] = {}
    for item in items:
        role, sep, command = item.partition("=")
        if not sep or not command.strip():
            raise click.BadParameter(f"expected ROLE=COMMAND, got {item!r}", param_hint="--role-command")
        out[role.strip()] = shlex.split(command)
    return out


def plan(workers: int, scheduler: bool, web_port: Optional[int], grace: float,
         overrides: dict[str, list[str]], env: dict[str, str]) -> list[ProcSpec]:
    """The processes to run, in start order."""
    procs = [ProcSpec("matcher", role_argv("matcher", overrides), env)]
    # Workers get less grace than we give them, so they hand running commands back before our SIGKILL.
    worker_extra = [] if "worker" in overrides else ["--grace", f"{max(grace - 3, 0):g}"]
    procs += [ProcSpec(f"worker.{i}", role_argv("worker", overrides) + worker_extra, env)
              for i in range(1, workers + 1)]
    if scheduler:
        procs.append(ProcSpec("scheduler", role_argv("scheduler", overrides), env))
    if web_port is not None:
        web_extra = [] if "web" in overrides else ["--port", str(web_port)]
        procs.append(ProcSpec("web", role_argv("web", overrides) + web_extra, env))
    return procs


def child_env(redis_url: str, config_path: Optional[Path]) -> dict[str, str]:
    """What the children get on top of our environment."""
    env = {
        "REDIS_URL": redis_url,
        "PYTHONUNBUFFERED": "1",  # line by line through the pipe, not in 8 KiB blocks
    }
    if config_path is not None:
        env["ANGORA_CONFIG"] = str(config_path.resolve())
    return env


def embedded_redis(s: Settings, redis_port: Optional[int]) -> RedisServer:
    """Redis on the unix socket under the data dir (and a loopback TCP port when asked), AOF on."""
    return RedisServer(data_dir=s.data_dir, port=redis_port or 0, unix_socket=s.embedded_socket)


def preflight(s: Settings, config_path: Optional[Path], web_port: Optional[int]) -> Optional[str]:
    """Check what `up` needs before starting anything; returns the line saying which redis-server it will run."""
    checks.definitions_ready(config_path or s.config_path)
    if web_port is not None:
        check_exposure(s, choose_host(s, None))  # the web role would refuse to start: say so before anything runs
        checks.port_free(s.bind or "127.0.0.1", web_port)
    if s.redis_url:
        from angora_rq.store.connection import connect

        checks.redis_ready(s, connect(s, socket_connect_timeout=5, socket_timeout=5))
        return None
    path, origin = which_redis_server()
    return f"redis-server: {path} ({origin})"


@main.command()
@click.option("-w", "--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Worker processes.")
@click.option("--scheduler/--no-scheduler", default=True, show_default=True, help="Run the scheduler.")
@click.option("--port", type=int, default=None, help="Web port [default: $PORT, else 5000].")
@click.option("--no-web", is_flag=True, help="Do not run the web app.")
@click.option("--redis-port", type=int, default=None,
              help="Also serve the embedded Redis on this loopback TCP port (default: unix socket only).")
@click.option("--grace", type=float, default=10.0, show_default=True,
              help="On stop, seconds each process gets after SIGTERM before SIGKILL.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="ANGORA_CONFIG", default=None,
              help="Definitions folder or file [default: ./config].")
@click.option("--role-command", "role_commands", multiple=True, hidden=True,
              help="ROLE=COMMAND: run COMMAND instead of `angora ROLE` (tests).")
@click.pass_context
def up(ctx: click.Context, workers: int, scheduler: bool, port: Optional[int], no_web: bool,
       redis_port: Optional[int], grace: float, config_path: Optional[Path], role_commands: tuple[str, ...]) -> None:
    """Run the whole system: Redis (unless REDIS_URL is set), matcher, workers, scheduler and web."""
    s = settings_from(ctx)
    web_port = None if no_web else (port or s.port)
    which = preflight(s, config_path, web_port)
    redis = None if s.redis_url else embedded_redis(s, redis_port)
    url = s.redis_url or (redis.url if redis else "")
    procs = plan(workers, scheduler, web_port, grace, parse_overrides(role_commands), child_env(url, config_path))
    sup = Supervisor(procs, redis, colour=sys.stdout.isatty() and not os.environ.get("NO_COLOR"),
                     policy=Policy(grace=grace))
    signal.signal(signal.SIGTERM, sup.request_stop)
    signal.signal(signal.SIGINT, sup.request_stop)
    try:
        if redis is None:
            sup.say(f"using the Redis at REDIS_URL ({redacted(url)})"
                    + ("; --redis-port ignored" if redis_port else ""))
        else:
            sup.say(f"{which}; data in {s.data_dir}")
        sup.start()
        if web_port is not None:
            sup.say(f"web UI: http://127.0.0.1:{web_port}/  (Ctrl-C stops everything)")
        while not sup.stopping:
            sup.step()
    finally:
        sup.stop()
    sup.say("all stopped")

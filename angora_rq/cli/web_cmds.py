"""`angora web`: the UI, the JSON API and rq-dashboard, served by granian (the server of the Procfile's web line)."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import click

from angora_rq.cli.group import main, settings_from
from angora_rq.core.settings import Settings

LOOPBACK = "127.0.0.1"
APP = "angora_rq.web:create_app"
THREADS = 4
# A granian worker SIGTERMed while it starts never stops, and without this its server waits for it for ever.
KILL_AFTER = 5


def choose_host(settings: Settings, host: Optional[str]) -> str:
    """--host, else ANGORA_BIND, else all interfaces with auth and loopback only without it."""
    return host or settings.bind or ("0.0.0.0" if settings.auth_enabled else LOOPBACK)


def startup_lines(settings: Settings, host: str, port: int) -> list[str]:
    """What `angora web` says when it starts: where it listens, and whether anyone can use it."""
    lines = [f"angora web: listening on http://{host}:{port}/ (API /api/v1, rq-dashboard /rq)"]
    if settings.auth_enabled:
        lines.append("angora web: authentication required (bearer token / login page)")
    elif host in (LOOPBACK, "localhost", "::1"):
        lines.append("angora web: WARNING: UNAUTHENTICATED (no ANGORA_AUTH_TOKEN or ANGORA_AUTH_USER/PASSWORD); "
                     "bound to loopback only. Set credentials before exposing it with --host/ANGORA_BIND.")
    else:
        lines.append(f"angora web: WARNING: UNAUTHENTICATED and listening on {host}: anyone who can reach "
                     "this port can run jobs. Set ANGORA_AUTH_TOKEN.")
    return lines


@main.command()
@click.option("--port", type=int, default=None, help="Port [default: $PORT, else 5000].")
@click.option("--host", default=None,
              help="Interface to bind [default: $ANGORA_BIND, else 0.0.0.0 with auth, 127.0.0.1 without].")
@click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="ANGORA_CONFIG", default=None,
              help="Definitions folder or file [default: ./config].")
@click.pass_context
def web(ctx: click.Context, port: Optional[int], host: Optional[str], config_path: Optional[Path]) -> None:
    """Serve the web UI, the JSON API (/api/v1) and rq-dashboard (/rq)."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels

    settings = settings_from(ctx)
    if config_path is not None:
        settings = replace(settings, config_path=config_path)
        os.environ["ANGORA_CONFIG"] = str(config_path)  # the server's worker builds the app from the environment
    bind = choose_host(settings, host)
    port = port or settings.port
    for line in startup_lines(settings, bind, port):
        click.echo(line, err=True)
    # One worker process with threads (the Procfile runs two): the same server as production, a small footprint.
    server = Granian(APP, address=bind, port=port, interface=Interfaces.WSGI, factory=True, workers=1,
                     blocking_threads=THREADS, log_level=LogLevels.warning, workers_kill_timeout=KILL_AFTER)
    try:
        server.serve()  # returns after SIGINT/SIGTERM, once requests in flight are answered
    except (OSError, RuntimeError) as e:  # granian reports a failed bind as RuntimeError("... (os error 98)")
        raise click.ClickException(f"cannot serve on {bind}:{port}: {e}") from e

"""`angora web`: the UI, the JSON API and rq-dashboard, served by granian (the Procfile's web line runs it)."""
from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Optional

import click

from angora_rq.cli.group import main, settings_from
from angora_rq.core.security import exposure, is_loopback
from angora_rq.core.settings import Settings

log = logging.getLogger("angora_rq.web")

LOOPBACK = "127.0.0.1"
APP = "angora_rq.web:create_app"


def choose_host(settings: Settings, host: Optional[str]) -> str:
    """--host, else ANGORA_BIND, else all interfaces with auth and loopback only without it."""
    return host or settings.bind or ("0.0.0.0" if settings.auth_enabled else LOOPBACK)


def check_exposure(settings: Settings, host: str) -> None:
    """Stop with a one-line error when `host` is off loopback without credentials; log the opt-out's warning."""
    error, warning = exposure(settings, host)
    if error:
        raise click.ClickException(error)
    if warning:
        log.warning("%s", warning)


def startup_lines(settings: Settings, host: str, port: int) -> list[str]:
    """What `angora web` says when it starts: where it listens, and whether anyone can use it."""
    lines = [f"angora web: listening on http://{host}:{port}/ (API /api/v1, rq-dashboard /rq)"]
    if settings.auth_enabled:
        lines.append("angora web: authentication required (bearer token / login page)")
    elif is_loopback(host):
        lines.append("angora web: WARNING: UNAUTHENTICATED (no ANGORA_AUTH_TOKEN or ANGORA_AUTH_USER/PASSWORD); "
                     "bound to loopback only. Set credentials before exposing it with --host/ANGORA_BIND.")
    # Off loopback without credentials (ANGORA_AUTH=off): check_exposure has logged its warning.
    return lines


@main.command()
@click.option("--port", type=int, default=None, help="Port [default: $PORT, else 5000].")
@click.option("--host", default=None,
              help="Interface to bind [default: $ANGORA_BIND, else 0.0.0.0 with auth, 127.0.0.1 without]. Off "
                   "loopback, credentials are required (or ANGORA_AUTH=off).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Server processes (the Procfile runs 2: one per core).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="ANGORA_CONFIG", default=None,
              help="Definitions folder or file [default: ./config].")
@click.pass_context
def web(ctx: click.Context, port: Optional[int], host: Optional[str], workers: int,
        config_path: Optional[Path]) -> None:
    """Serve the web UI, the JSON API (/api/v1) and rq-dashboard (/rq)."""
    from angora_rq.web.server import granian_server

    settings = settings_from(ctx)
    bind = choose_host(settings, host)
    check_exposure(settings, bind)
    if settings.redis_url or settings.embedded_socket.exists():
        from angora_rq.cli import checks
        from angora_rq.store.connection import connect

        checks.redis_ready(settings, connect(settings, socket_connect_timeout=5, socket_timeout=5))
    # The server's workers build the app from the environment: tell them where it listens (the Host names it
    # answers to by default follow from it) and which definitions to read.
    os.environ["ANGORA_BIND"] = bind
    if config_path is not None:
        settings = replace(settings, config_path=config_path)
        os.environ["ANGORA_CONFIG"] = str(config_path)
    port = port or settings.port
    for line in startup_lines(settings, bind, port):
        click.echo(line, err=True)
    server = granian_server(APP, bind, port, workers)
    try:
        server.serve()  # returns after SIGINT/SIGTERM, once requests in flight are answered
    except (OSError, RuntimeError) as e:  # granian reports a failed bind as RuntimeError("... (os error 98)")
        raise click.ClickException(f"cannot serve on {bind}:{port}: {e}") from e

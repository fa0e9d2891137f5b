"""`angora web`: the UI, the JSON API and rq-dashboard on Flask's threaded server (the Procfile runs granian in production)."""
from __future__ import annotations

import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import click

from . import main, settings_from
from ..settings import Settings

LOOPBACK = "127.0.0.1"


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
    from ..web import create_app

    settings = settings_from(ctx)
    if config_path is not None:
        settings = replace(settings, config_path=config_path)
    bind = choose_host(settings, host)
    port = port or settings.port
    app = create_app({"SETTINGS": settings})
    for line in startup_lines(settings, bind, port):
        click.echo(line, err=True)
    signal.signal(signal.SIGTERM, _exit)
    app.run(host=bind, port=port, threaded=True, debug=False, use_reloader=False)


def _exit(signum: int, frame: Any) -> None:
    sys.exit(0)

"""What `angora up` and the roles check before they start anything: each problem is one line saying what to do."""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

import click

from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings

log = logging.getLogger("angora_rq.cli")


def definitions_ready(path: Path) -> None:
    """The definitions at `path` exist and are valid; else print their errors and raise with what to do."""
    from angora_rq.definitions.load import validate

    path = Path(path)
    if not path.exists():
        where = path if path.is_absolute() else f"{path} (in {Path.cwd()})"
        raise AngoraError(f"no definitions folder {where}: run from the folder that holds it (the checkout's root), "
                          "or give --config PATH or set ANGORA_CONFIG")
    config, problems = validate(path)
    if config is None:
        errors = [p for p in problems if p.severity == "error"]
        for p in errors:
            click.echo(str(p), err=True)
        raise AngoraError(f"{len(errors)} error(s) in the definitions in {path}: fix them (`angora validate` lists "
                          "them); nothing was started")


def tls_files_ready(settings: Settings) -> None:
    """The CA file named by ANGORA_REDIS_TLS_CA can be read (checked before any connection is tried)."""
    ca = settings.redis_tls_ca
    if ca and not os.access(ca, os.R_OK):
        raise AngoraError(f"ANGORA_REDIS_TLS_CA={ca}: no readable file there; give the PEM file of the CA that "
                          "signed the Redis server's certificate")


def redis_ready_for_migration(settings: Settings, r: Any) -> None:
    """What `angora migrate` needs: a server named, its TLS files, and an answer (it cannot wait for one)."""
    from angora_rq.store.connection import first_contact

    tls_files_ready(settings)
    warning = first_contact(r, settings.effective_redis_url)
    if warning:
        raise AngoraError(warning.replace("; retrying", "") + ": start it, then run `angora migrate` again")


def no_redis_named(settings: Settings) -> str:
    """Why no Redis can be reached from these settings ('' when one is named: REDIS_URL, or `angora up`'s)."""
    if settings.redis_url or settings.embedded_socket.exists():
        return ""
    return f"REDIS_URL is not set and no `angora up` runs here (no {settings.embedded_socket})"


def redis_ready(settings: Settings, r: Any) -> None:
    """A role's Redis settings can work: a server is named, its TLS files exist, and it accepts us.

    A server that does not answer yet is only logged: the role's loop retries until it does. One that answers must
    hold data of this release's layout.
    """
    from angora_rq.store.connection import first_contact

    missing = no_redis_named(settings)
    if missing:
        raise AngoraError(f"{missing}: set REDIS_URL (rediss:// for TLS), or start `angora up`")
    from angora_rq.store.connection import unavailable

    tls_files_ready(settings)
    warning = first_contact(r, settings.effective_redis_url)
    if warning:
        log.warning("%s", warning)
        return
    try:
        layout_ready(r, Keys(settings.prefix))
        redis_setup_ready(r, settings)
    except Exception as e:
        # Redis can go away between the PING and the layout's read (a restart under load): like a server that
        # does not answer yet, that is for the role's loop to ride out, not a reason to exit.
        if unavailable(e) is None:
            raise
        log.warning("Redis went away before the data's layout could be read (%s); retrying", e)


def layout_ready(r: Any, keys: Keys) -> None:
    """The data under the prefix is in this release's layout (a new deployment is marked with it); else one line
    saying what to do (`angora migrate`, or the release that wrote it)."""
    from angora_rq.store import layout

    layout.check(r, keys)


def redis_setup_ready(r: Any, settings: Settings) -> None:
    """Log a warning for each way this Redis can lose accepted work or refuse it (store.redis_setup): a role still
    starts, as a managed Redis may not let these be changed at once."""
    from angora_rq.store.redis_setup import setup_warnings

    for warning in setup_warnings(r, settings):
        log.warning("%s", warning)


def port_free(host: str, port: int) -> None:
    """Nothing listens on host:port yet (the web server could bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise AngoraError(f"cannot serve the web UI on {host}:{port} ({e.strerror}): stop what uses the port, "
                              "or choose another with --port or PORT") from e

"""The `angora` click group, its logging and settings; the command modules register on `main`."""
from __future__ import annotations

import sys
from typing import Any

import click

from angora_rq.core.errors import AngoraError, Overloaded
from angora_rq.core.settings import Settings
from angora_rq.processes import logs

# Long-running processes: their logs are their output, on stdout (what platforms and journald collect). The
# other commands print results on stdout and keep their logs on stderr.
ROLES = frozenset({"matcher", "worker", "scheduler", "web", "up"})


class AngoraGroup(click.Group):
    """A click group that shows AngoraError as a clean message (exit 1), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Overloaded as e:
            raise Refused(f"{e.message} (retry after {e.retry_after}s)") from e
        except AngoraError as e:
            raise click.ClickException(e.message) from e


class Refused(click.ClickException):
    """A budget is used up: exit status 75 (EX_TEMPFAIL, "try again later"), as HTTP answers 503 + Retry-After."""

    exit_code = 75


def setup_logging(level: str, fmt: str = "text", role: bool = False) -> None:
    """Only the CLI configures logging: one line per event, on stdout for the roles and on stderr otherwise."""
    logs.configure(level, fmt, sys.stdout if role else sys.stderr)


def settings_from(ctx: click.Context) -> Settings:
    """The Settings object the group put on the context."""
    return ctx.ensure_object(dict)["settings"]


@click.group(cls=AngoraGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--log-level", envvar="ANGORA_LOG_LEVEL", default="INFO", show_default=True, help="Logging level.")
@click.version_option(package_name="angora_rq")
@click.pass_context
def main(ctx: click.Context, log_level: str) -> None:
    """Angora: Linux commands declared in YAML, triggered by messages, run by RQ workers on Redis."""
    try:
        settings = Settings.from_env()
    except AngoraError as e:
        raise click.ClickException(e.message) from e
    setup_logging(log_level, settings.log_format, role=ctx.invoked_subcommand in ROLES)
    ctx.ensure_object(dict)["settings"] = settings

"""`angora doctor`: every check a role makes, and what the deployment looks like, in one report."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

import click

from angora_rq.cli.engine_cmds import config_option
from angora_rq.cli.group import main, settings_from
from angora_rq.core.doctor import ERROR, OK, WARN, Finding, budget_findings, data_lost_finding, \
    definition_findings, exit_code, layout_finding, process_findings, web_finding
from angora_rq.core.errors import AngoraError
from angora_rq.core.keys import Keys
from angora_rq.core.settings import Settings


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="The findings as a JSON list.")
@click.pass_context
def doctor(ctx: click.Context, config_path: Optional[Path], as_json: bool) -> None:
    """Check the deployment: definitions, Redis (reachable, set up not to lose work, data of this release), the
    processes alive, the budgets and the web's credentials. Exits 1 when anything is an error."""
    s = settings_from(ctx)
    path = Path(config_path or s.config_path)
    findings, schedules = definitions(path)
    findings += redis_findings(s, schedules)
    findings.append(web_check(s))
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for f in findings:
            click.echo(f.line())
    ctx.exit(exit_code(findings))


def definitions(path: Path) -> tuple[list[Finding], int]:
    """The definitions' findings, and how many schedules they define."""
    from angora_rq.definitions.load import validate

    if not path.exists():
        return [Finding(ERROR, "definitions", f"no definitions folder {path} (in {Path.cwd()}): give --config PATH "
                                              "or set ANGORA_CONFIG")], 0
    config, problems = validate(path)
    errors = [str(p) for p in problems if p.severity == "error"]
    warnings = [str(p) for p in problems if p.severity != "error"]
    jobs, schedules = (len(config.jobs), len(config.schedules)) if config is not None else (0, 0)
    return definition_findings(jobs, schedules, errors, warnings, str(path)), schedules


def redis_findings(s: Settings, schedules: int) -> list[Finding]:
    """Redis reachable and its version and role; then, if it answers, the data, its setup, the processes, the
    budgets."""
    from angora_rq.cli.checks import no_redis_named, tls_files_ready
    from angora_rq.store.connection import connect, first_contact, redacted

    missing = no_redis_named(s)
    if missing:
        return [Finding(ERROR, "redis", missing)]
    where = redacted(s.effective_redis_url)
    try:
        tls_files_ready(s)
        r = connect(s, socket_connect_timeout=5, socket_timeout=5)
        unanswered = first_contact(r, s.effective_redis_url)
    except AngoraError as e:
        return [Finding(ERROR, "redis", str(e))]
    if unanswered:
        return [Finding(ERROR, "redis", unanswered.replace("; retrying", ""))]
    try:
        return answered(r, Keys(s.prefix), s, where, schedules)
    except Exception as e:  # Redis went away meanwhile, or refused a read: said, not a traceback
        return [Finding(ERROR, "redis", f"{where} stopped answering during the checks: {e}")]


def answered(r: Any, keys: Keys, s: Settings, where: str, schedules: int) -> list[Finding]:
    """The findings of a Redis that answers."""
    from angora_rq.core.metrics import alive_by_role
    from angora_rq.store import layout
    from angora_rq.store.metrics import read_sample
    from angora_rq.store.pressure import Pressure
    from angora_rq.store.redis_setup import setup_warnings

    out = [Finding(OK, "redis", f"{where} answers: {server(r)}")]
    out += [Finding(WARN, "redis", w) for w in setup_warnings(r, s)]
    out.append(layout_finding(layout.found(r, keys), keys.prefix))
    usage = Pressure(r, keys, s).usage()
    lost = data_lost_finding(usage["data_lost"])
    if lost is not None:
        out.append(lost)
    sample = read_sample(r, keys, [])
    holder = sample.lease.rpartition(" ")[0]
    out += process_findings(alive_by_role(sample.beats, time.time()), holder, schedules)
    out += budget_findings(usage)
    return out


def server(r: Any) -> str:
    """`Redis 7.0.15, primary` (or `replica`), from INFO; `version unknown` when INFO is refused."""
    try:
        info = r.info("server")
        role = r.info("replication").get("role")
    except Exception:
        return "version unknown (INFO refused)"
    return f"Redis {info.get('redis_version', '?')}, {'primary' if role == 'master' else role or 'role unknown'}"


def web_check(s: Settings) -> Finding:
    """The web role's exposure on the address it would serve."""
    from angora_rq.cli.web_cmds import choose_host
    from angora_rq.core.security import exposure

    host = choose_host(s, None)
    error, warning = exposure(s, host)
    return web_finding(s.auth_enabled, host, error, warning)

"""Definition commands: validate, jobs, graph, explain (no Redis needed)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click

from angora_rq.cli.group import main, settings_from
from angora_rq.core.model import Config, Problem

config_option = click.option("--config", "config_path", type=click.Path(path_type=Path), envvar="ANGORA_CONFIG",
                             default=None, help="Definitions folder or file [default: ./config].")


def _load(ctx: click.Context, config_path: Optional[Path]) -> Config:
    """The valid configuration, or print every error and exit 1."""
    from angora_rq.definitions.load import validate

    config, problems = validate(config_path or settings_from(ctx).config_path)
    if config is None:
        for p in problems:
            click.echo(str(p), err=True)
        errors = sum(p.severity == "error" for p in problems)
        raise click.ClickException(f"{errors} error(s) in the definitions; run `angora validate` for details")
    return config


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print the problems as JSON.")
@click.pass_context
def validate(ctx: click.Context, config_path: Optional[Path], as_json: bool) -> None:
    """Check the definitions: every error and warning as file:line:col; exit 1 when invalid."""
    from angora_rq.definitions.load import check

    checked = check(config_path or settings_from(ctx).config_path)
    problems = checked.problems
    errors = [p for p in problems if p.severity == "error"]
    warnings = [p for p in problems if p.severity != "error"]
    if as_json:
        click.echo(json.dumps({"valid": not errors, "problems": [p.to_json() for p in problems]}, indent=2))
    else:
        _print_problems(errors + warnings)
        click.echo(f"{checked.jobs} jobs, {checked.schedules} schedules, {len(errors)} errors, "
                   f"{len(warnings)} warnings")
    sys.exit(1 if errors else 0)


def _print_problems(problems: list[Problem]) -> None:
    for p in problems:
        click.echo(str(p), err=p.severity == "error")


@main.command()
@config_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def jobs(ctx: click.Context, config_path: Optional[Path], as_json: bool) -> None:
    """List the jobs: triggers, messages, queue, replay, parent_success."""
    config = _load(ctx, config_path)
    if as_json:
        click.echo(json.dumps([j.to_json() for j in config.jobs], indent=2))
        return
    rows = [("NAME", "TRIGGERS", "MESSAGES", "QUEUE", "REPLAY", "PARENT_SUCCESS")]
    for j in config.jobs:
        replay = "unlimited" if j.replay is None else str(j.replay)
        rows.append((j.name, ",".join(j.triggers), ",".join(j.messages) or "-", j.queue, replay,
                     "yes" if j.parent_success else "no"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


@main.command()
@config_option
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid", "json"]), default="dot", show_default=True)
@click.pass_context
def graph(ctx: click.Context, config_path: Optional[Path], fmt: str) -> None:
    """Print the workflow graph (jobs linked by the messages they send)."""
    from angora_rq.core.graph import Graph

    config = _load(ctx, config_path)
    g = Graph(config.jobs, config.schedules)
    if fmt == "json":
        click.echo(json.dumps(g.to_json(), indent=2))
    else:
        click.echo(g.to_dot() if fmt == "dot" else g.to_mermaid(), nl=False)


@main.command()
@click.argument("topic")
@config_option
@click.pass_context
def explain(ctx: click.Context, topic: str, config_path: Optional[Path]) -> None:
    """Which jobs a message would start, and its whole downstream plan."""
    from angora_rq.core.graph import Graph
    from angora_rq.core.messages import check_topic

    config = _load(ctx, config_path)
    check_topic(topic)
    g = Graph(config.jobs, config.schedules)
    plan = g.plan(topic)
    direct = [j.name for j in g.index.lookup(topic)]
    if not direct:
        click.echo(f"'{topic}' starts no job.")
        return
    click.echo(f"'{topic}' starts: {', '.join(direct)}")
    click.echo(f"plan ({len(plan.jobs)} jobs):")
    for name in plan.jobs:
        job = config.job(name)
        parents = plan.parents.get(name, ())
        after = f"  <- {', '.join(parents)}" if parents else ""
        join = "  [join: runs once every parent succeeded]" if job is not None and job.parent_success else ""
        click.echo(f"{'  ' * (plan.depth[name] + 1)}{name}{after}{join}")

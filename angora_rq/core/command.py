"""What a command is before it runs: its argv, environment, directory and log, from a job and an execution (pure).

Variables ($VAR, ${VAR}) expand from the worker's own environment only; a message's params reach a command as
ANGORA_PARAM_<NAME> values, never in its argv and never expanded.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from angora_rq.core.execution import Claimed
from angora_rq.core.model import JobDef
from angora_rq.core.outputs import OUTPUT_VAR, output_file
from angora_rq.core.settings import Settings

TAIL_LIMIT = 65536
PARAM_PREFIX = "ANGORA_PARAM_"
_VAR = re.compile(r"\$(?:([A-Za-z_][A-Za-z0-9_]*)|\{([A-Za-z_][A-Za-z0-9_]*)\})")


@dataclass(frozen=True)
class CommandSpec:
    """Everything needed to start one command; timeout None or <= 0 means none."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Optional[str] = None
    log_path: Optional[str] = None  # <log>/<name>.log: the whole output is appended when the command ends
    timeout: Optional[float] = None
    kill_grace: float = 5.0
    header: str = "angora"
    spool_dir: Optional[str] = None  # output goes to an unnamed file here (the tail is read from it)
    tail_limit: int = TAIL_LIMIT
    output_path: Optional[str] = None  # $ANGORA_OUTPUT: KEY=VALUE lines the command may write (core/outputs.py)


def expand_path(text: str, env: Mapping[str, str]) -> str:
    """Replace `$VAR` and `${VAR}` from `env`; unknown variables stay as written; nothing else happens."""
    if "$" not in text:
        return text
    return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), m.group(0)), text)


def expand_argv(template: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Expand variables in each argument: one template argument is one argv element (no globbing, no splitting)."""
    return [expand_path(arg, env) for arg in template]


class CleanEnv(dict):
    """An environment already without ANGORA_PARAM_* (a worker's own, filtered once instead of per command)."""

    @classmethod
    def of(cls, env: Mapping[str, str]) -> "CleanEnv":
        return cls((k, v) for k, v in env.items() if not k.startswith(PARAM_PREFIX))


def build_env(base: Mapping[str, str], job: JobDef, message_params: Mapping[str, str],
              extra: Mapping[str, str]) -> dict[str, str]:
    """The command's environment: base + job.env + ANGORA_PARAM_<NAME upper-cased> + extra (later wins).

    job.env values are expanded from `base`; params are values only (never expanded, never in argv);
    message params override the job's defaults; ANGORA_PARAM_* inherited from `base` are dropped so a job
    only ever sees its own params.
    """
    if isinstance(base, CleanEnv):
        env = dict(base)
    else:
        env = {k: v for k, v in base.items() if not k.startswith(PARAM_PREFIX)}
    env.update({k: expand_path(v, base) for k, v in job.env.items()})
    for params in (job.params, message_params):
        env.update({PARAM_PREFIX + k.upper(): v for k, v in params.items()})
    env.update(extra)
    return env


def command_spec(ex: Claimed, settings: Settings, spool_dir: str, base: Mapping[str, str]) -> CommandSpec:
    """The runner's spec: $VARS from `base` (the worker's own environment) only; params only as ANGORA_PARAM_*."""
    spec = ex.spec
    outputs = output_file(spool_dir, ex.id)
    extra = {
        "ANGORA_RUN_ID": ex.run, "ANGORA_MESSAGE": ex.topic, "ANGORA_JOB": spec.name,
        "ANGORA_ATTEMPT": str(ex.attempt), "ANGORA_EXECUTION_ID": ex.id, OUTPUT_VAR: outputs,
    }
    log_dir = expand_path(spec.log, base) if spec.log else None
    return CommandSpec(
        argv=expand_argv(spec.command, base),
        env=build_env(base, spec, ex.params, extra),
        cwd=expand_path(spec.cwd, base) if spec.cwd else None,
        log_path=posixpath.join(log_dir, f"{spec.name}.log") if log_dir else None,
        timeout=spec.timeout or settings.default_timeout,
        kill_grace=settings.kill_grace,
        header=f"angora job={spec.name} execution={ex.id} attempt={ex.attempt} run={ex.run}",
        spool_dir=spool_dir,
        output_path=outputs,
    )

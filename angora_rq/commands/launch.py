"""Turn a claimed execution into the command the runner starts (argv, environment, log file)."""
from __future__ import annotations

import os
from typing import Mapping, Optional

from angora_rq.commands.runner import CommandSpec, build_env, expand_argv, expand_path
from angora_rq.core.settings import Settings
from angora_rq.store.state import Claimed


def command_spec(ex: Claimed, settings: Settings, spool_dir: str,
                 base: Optional[Mapping[str, str]] = None) -> CommandSpec:
    """The runner's spec: $VARS from the worker's own environment only; params only as ANGORA_PARAM_*."""
    spec = ex.spec
    base = dict(os.environ) if base is None else base  # only read here: build_env makes the new dict
    extra = {
        "ANGORA_RUN_ID": ex.run, "ANGORA_MESSAGE": ex.topic, "ANGORA_JOB": spec.name,
        "ANGORA_ATTEMPT": str(ex.attempt), "ANGORA_EXECUTION_ID": ex.id,
    }
    log_dir = expand_path(spec.log, base) if spec.log else None
    return CommandSpec(
        argv=expand_argv(spec.command, base),
        env=build_env(base, spec, ex.params, extra),
        cwd=expand_path(spec.cwd, base) if spec.cwd else None,
        log_path=os.path.join(log_dir, f"{spec.name}.log") if log_dir else None,
        timeout=spec.timeout or settings.default_timeout,
        kill_grace=settings.kill_grace,
        header=f"angora job={spec.name} execution={ex.id} attempt={ex.attempt} run={ex.run}",
        spool_dir=spool_dir,
    )

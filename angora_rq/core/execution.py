"""An execution as the worker holds it, and the pure rules of finishing one: its status, replays and backoff."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Optional, Protocol, Sequence

from angora_rq.core.codec import to_str
from angora_rq.core.errors import InvalidInput
from angora_rq.core.model import JobDef
from angora_rq.core.outputs import parse_outputs
from angora_rq.core.schema import Exec

SPEC_CACHE = 4096
UNVERSIONED = "~"  # spec_version's mark of a version made from the spec itself


class OutcomeLike(Protocol):
    """What finalize needs of a finished command (runner.Outcome has it)."""

    @property
    def exit_code(self) -> Optional[int]: ...
    @property
    def signal(self) -> Optional[int]: ...
    @property
    def reason(self) -> str: ...
    @property
    def started(self) -> float: ...
    @property
    def ended(self) -> float: ...
    @property
    def duration(self) -> float: ...
    @property
    def tail(self) -> str: ...
    @property
    def output(self) -> bytes: ...
    @property
    def ok(self) -> bool: ...


CLAIM_WIDTH = 11  # values per execution in a CLAIM reply (store/lua/claim.lua)


@dataclass
class Claimed:
    """An execution a worker has claimed: what it needs to run and finalize it."""

    id: str
    spec: JobDef
    run: str
    attempt: int
    topic: str
    params: dict[str, str]
    queue: str
    created: float
    version: str = ""  # the definitions version its spec is recorded under (Exec.config_version)
    follow: str = ""  # its version's Defs.follow record of the job (CLAIM): topics its worker dispatches itself

    @classmethod
    def from_claim(cls, values: Sequence[Any]) -> "Claimed":
        """Build from the CLAIM script's CLAIM_WIDTH values for one execution."""
        id_, spec, run, attempt, topic, params, queue, created, version, job, follow = (to_str(f) for f in values)
        return cls(
            id=id_,
            spec=_spec(spec, job),
            run=run,
            attempt=int(attempt or 1),
            topic=topic,
            params=json.loads(params) if params else {},
            queue=queue,
            created=float(created or 0),
            version=version,
            follow=follow,
        )

    @classmethod
    def from_hash(cls, xid: str, fields: dict[str, str], spec: str) -> "Claimed":
        """Rebuild what a worker held about an execution from its hash (decoded) and its spec's JSON."""
        return cls(
            id=xid,
            spec=_spec(spec, fields.get(Exec.job, "")),
            run=fields.get(Exec.run, ""),
            attempt=int(fields.get(Exec.attempt) or 1),
            topic=fields.get(Exec.topic, ""),
            params=json.loads(fields[Exec.params]) if fields.get(Exec.params) else {},
            queue=fields.get(Exec.queue) or "default",
            created=float(fields.get(Exec.created) or 0),
            version=fields.get(Exec.config_version, ""),
        )


_specs: dict[str, JobDef] = {}


def _spec(text: str, name: str) -> JobDef:
    """The JobDef of a stored spec; parsed once per distinct text (every execution of a job version shares it).

    A spec Redis no longer has ('') gives a job that cannot start: its execution fails, once, and says why."""
    if not text:
        return JobDef(name=name, triggers=(), command=(), replay=0, description="its definition is missing in Redis")
    job = _specs.get(text)
    if job is None:
        if len(_specs) > SPEC_CACHE:
            _specs.clear()
        job = _specs[text] = JobDef.from_json(json.loads(text))
    return job


_follows: dict[str, dict[str, tuple[JobDef, ...]]] = {}


def followers(follow: str, topic: str) -> Optional[tuple[JobDef, ...]]:
    """The jobs a message of `topic` triggers, as a job's Defs.follow record (`follow`) says, or None when the
    record leaves the topic to the matchers (or there is no record). Each record text is parsed once."""
    if not follow:
        return None
    topics = _follows.get(follow)
    if topics is None:
        if len(_follows) > SPEC_CACHE:
            _follows.clear()
        topics = _follows[follow] = {t: tuple(_spec(s, "") for s in specs)
                                     for t, specs in json.loads(follow).items()}
    return topics.get(topic)


def follow_record(topics: dict[str, list[JobDef]]) -> str:
    """A job's Defs.follow record: per topic a worker may dispatch itself, the specs of the jobs it triggers."""
    return json.dumps({t: [spec_json(j) for j in jobs] for t, jobs in topics.items()})


def spec_json(job: JobDef) -> str:
    """A job's spec as recorded once per definitions version (the worker parses each distinct text once)."""
    return json.dumps(job.to_json())


def spec_version(version: str, spec: str) -> str:
    """The version a spec is recorded under: the definitions' version, or, for a job created outside any loaded
    definitions (no version), one made from the spec's text, so two such specs of one name never collide."""
    return version or UNVERSIONED + hashlib.sha1(spec.encode()).hexdigest()[:11]


def worker_host(worker: str) -> str:
    """The host a worker named by default (`host.pid.random`) runs on ('' for another name)."""
    host, _, rest = worker.rpartition(".")
    host, _, pid = host.rpartition(".")
    return host if host and pid.isdigit() and rest else ""


def replay_allowed(spec: JobDef, attempt: int) -> bool:
    """Whether a failed attempt (1-based) may run again: `replay` None = always, N = N more attempts."""
    return spec.replay is None or attempt <= spec.replay


# Ends that say nothing about the command: its worker was lost (or gave its commands up when it could not reach
# Redis). Their replay starts at once, without the backoff meant to slow down a failing command.
FENCED = "fenced"  # the reason of a command its worker ended because it could not renew its lease (selffence.py)
NOT_THE_COMMAND = frozenset({"worker lost", FENCED})


def replay_delay(spec: JobDef, attempt: int, cap: float, reason: str = "") -> float:
    """Backoff before the next attempt: replay_delay doubling per attempt, capped; none after a lost worker."""
    if reason in NOT_THE_COMMAND:
        return 0.0
    return min(cap, spec.replay_delay * (2 ** max(0, attempt - 1)))


FAILED_JOB = "ANGORA_FAILED_JOB"  # the params a failure branch's messages carry beside the execution's own
FAILED_EXECUTION = "ANGORA_FAILED_EXECUTION_ID"
FAILED_EXIT_CODE = "ANGORA_FAILED_EXIT_CODE"
FAILED_REASON = "ANGORA_FAILED_REASON"


def failure_params(job: str, xid: str, params: dict[str, str], exit_code: Optional[int], reason: str) -> dict[str, str]:
    """The params of the messages a job's `on_failure` sends: the failed execution's own, plus which job and
    execution failed, its exit code ('' when it has none: killed by a signal, lost) and why."""
    return {**params, FAILED_JOB: job, FAILED_EXECUTION: xid,
            FAILED_EXIT_CODE: "" if exit_code is None else str(exit_code), FAILED_REASON: reason}


def take_outputs(outcome: OutcomeLike) -> tuple[OutcomeLike, dict[str, str]]:
    """The outputs a command wrote ($ANGORA_OUTPUT), and its outcome: as it was, or, when they break the rules, a
    failure whose reason says why (`output: line 2 of $ANGORA_OUTPUT has no '=' ...`), also told in its tail."""
    try:
        return outcome, parse_outputs(outcome.output)
    except InvalidInput as e:
        problem = f"output: {e.message}"
    reason = problem if outcome.ok else outcome.reason  # a command that failed anyway keeps its own reason
    sep = "\n" if outcome.tail and not outcome.tail.endswith("\n") else ""
    return replace(outcome, reason=reason, tail=f"{outcome.tail}{sep}angora: {problem}\n"), {}  # type: ignore


def final_status(ex: Claimed, outcome: OutcomeLike) -> str:
    """How a finished attempt is recorded: succeeded, killed, replaying (another attempt follows) or failed."""
    if outcome.ok:
        return "succeeded"
    if outcome.reason == "killed":
        return "killed"
    return "replaying" if replay_allowed(ex.spec, ex.attempt) else "failed"

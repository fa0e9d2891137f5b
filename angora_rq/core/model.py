"""The data model of definitions: jobs, schedules, problems, a loaded configuration (pure: no I/O)."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional

DEFAULT_QUEUE = "default"


@dataclass(frozen=True)
class Location:
    """Where something stands in a definition file (1-based line and column)."""

    path: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Problem:
    """One error or warning about the definitions, printed as `path:line:col: job 'NAME': message`."""

    location: Optional[Location]
    message: str
    job: Optional[str] = None
    severity: str = "error"  # "error" | "warning"
    kind: str = "job"  # "job" | "schedule": how `job` is named in the text

    def __str__(self) -> str:
        where = f"{self.location}: " if self.location else ""
        who = f"{self.kind} '{self.job}': " if self.job is not None else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}{tag}{who}{self.message}"

    def to_json(self) -> dict:
        """A JSON-ready view for the API."""
        loc = self.location
        return {
            "severity": self.severity,
            "path": loc.path if loc else None,
            "line": loc.line if loc else None,
            "col": loc.col if loc else None,
            "job": self.job,
            "message": self.message,
            "text": str(self),
        }


@dataclass(frozen=True)
class JobDef:
    """One job: a command run when a message matching one of its triggers arrives."""

    name: str
    triggers: tuple[str, ...]
    command: tuple[str, ...]  # argv template, split like a POSIX shell; $VARS expanded at run time
    log: Optional[str] = None  # directory; output goes to <log>/<name>.log; $VARS expanded at run time
    messages: tuple[str, ...] = ()
    replay: Optional[int] = None  # None = unlimited (the original default), 0 = never
    on_failure: tuple[str, ...] = ()  # topics sent when an execution fails for good (replays spent, or killed)
    approval: bool = False  # a gate: each execution waits until someone approves or rejects it
    approval_timeout: Optional[float] = None  # seconds; then on_approval_timeout decides
    on_approval_timeout: str = "reject"  # "reject" | "approve"
    parent_success: bool = False
    description: str = ""
    timeout: Optional[float] = None  # seconds; None = the settings' default
    queue: str = DEFAULT_QUEUE
    env: dict[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    params: dict[str, str] = field(default_factory=dict)
    concurrency: Optional[int] = None
    replay_delay: float = 1.0
    location: Optional[Location] = field(default=None, compare=False)

    __hash__ = None  # type: ignore[assignment]  # dict fields: not hashable, compare by value

    def to_json(self) -> dict:
        """A JSON-ready view (also the spec stored with every execution)."""
        return {
            "name": self.name,
            "triggers": list(self.triggers),
            "command": list(self.command),
            "log": self.log,
            "messages": list(self.messages),
            "on_failure": list(self.on_failure),
            "approval": self.approval,
            "approval_timeout": self.approval_timeout,
            "on_approval_timeout": self.on_approval_timeout,
            "replay": self.replay,
            "parent_success": self.parent_success,
            "description": self.description,
            "timeout": self.timeout,
            "queue": self.queue,
            "env": dict(self.env),
            "cwd": self.cwd,
            "params": dict(self.params),
            "concurrency": self.concurrency,
            "replay_delay": self.replay_delay,
            "location": str(self.location) if self.location else None,
        }

    @classmethod
    def from_json(cls, d: dict) -> "JobDef":
        """Inverse of to_json (the location is kept as text only, so it is dropped)."""
        return cls(
            name=d["name"],
            triggers=tuple(d["triggers"]),
            command=tuple(d["command"]),
            log=d.get("log"),
            messages=tuple(d.get("messages") or ()),
            on_failure=tuple(d.get("on_failure") or ()),
            approval=bool(d.get("approval")),
            approval_timeout=d.get("approval_timeout"),
            on_approval_timeout=d.get("on_approval_timeout") or "reject",
            replay=d.get("replay"),
            parent_success=bool(d.get("parent_success")),
            description=d.get("description") or "",
            timeout=d.get("timeout"),
            queue=d.get("queue") or DEFAULT_QUEUE,
            env=dict(d.get("env") or {}),
            cwd=d.get("cwd"),
            params=dict(d.get("params") or {}),
            concurrency=d.get("concurrency"),
            replay_delay=float(d.get("replay_delay", 1.0)),
        )


@dataclass(frozen=True)
class ScheduleDef:
    """A schedule: sends `message` (with `params`) on a cron expression or every `every` seconds."""

    name: str
    message: str
    cron: Optional[str] = None
    every: Optional[float] = None
    timezone: str = "UTC"
    params: dict[str, str] = field(default_factory=dict)
    catchup: str = "skip"  # "skip" | "once"
    overlap: str = "allow"  # "allow" | "forbid"
    description: str = ""
    location: Optional[Location] = field(default=None, compare=False)

    __hash__ = None  # type: ignore[assignment]

    def to_json(self) -> dict:
        """A JSON-ready view."""
        return {
            "name": self.name,
            "message": self.message,
            "cron": self.cron,
            "every": self.every,
            "timezone": self.timezone,
            "params": dict(self.params),
            "catchup": self.catchup,
            "overlap": self.overlap,
            "description": self.description,
            "location": str(self.location) if self.location else None,
        }


@dataclass(frozen=True)
class WebhookDef:
    """A webhook: every event matching one of `events` is POSTed to `url` as JSON, signed with `secret`."""

    name: str
    url: str
    events: tuple[str, ...]
    secret: Optional[str] = None  # HMAC-SHA256 key; $VARS expanded from the deliverer's environment
    retries: int = 5  # attempts after the first, with backoff
    timeout: float = 10.0
    description: str = ""
    location: Optional[Location] = field(default=None, compare=False)

    def to_json(self) -> dict:
        """A JSON-ready view (the secret is never shown)."""
        return {"name": self.name, "url": self.url, "events": list(self.events), "signed": bool(self.secret),
                "retries": self.retries, "timeout": self.timeout, "description": self.description,
                "location": str(self.location) if self.location else None}


@dataclass(frozen=True)
class Config:
    """A loaded, valid set of definitions with its warnings and a content version id."""

    jobs: tuple[JobDef, ...]
    schedules: tuple[ScheduleDef, ...] = ()
    warnings: tuple[Problem, ...] = ()
    version: str = ""
    files: tuple[str, ...] = ()
    webhooks: tuple[WebhookDef, ...] = ()

    @cached_property
    def by_name(self) -> dict[str, JobDef]:
        """Jobs by name."""
        return {j.name: j for j in self.jobs}

    def job(self, name: str) -> Optional[JobDef]:
        """The job called `name`, or None."""
        return self.by_name.get(name)

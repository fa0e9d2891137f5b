"""What `angora doctor` says of a deployment: findings from what the CLI read (pure: no I/O)."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Optional

from angora_rq.core.layout import LAYOUT

OK, WARN, ERROR = "ok", "warn", "error"
# Of a budget: past this share the doctor warns (at the whole of it, sends get 503).
BUDGET_WARN = 0.8


@dataclass(frozen=True)
class Finding:
    """One line of the doctor's report: how bad, about what, what to know or do."""

    level: str  # ok, warn or error
    area: str  # definitions, redis, data, processes, budgets, web
    text: str

    def line(self) -> str:
        """`level  area: text`, the columns aligned."""
        return f"{self.level:5}  {self.area}: {self.text}"

    def as_dict(self) -> dict[str, str]:
        """For --json."""
        return asdict(self)


def exit_code(findings: Iterable[Finding]) -> int:
    """1 when anything is an error, else 0 (warnings do not fail the check)."""
    return 1 if any(f.level == ERROR for f in findings) else 0


def layout_finding(found: Optional[int], prefix: str) -> Finding:
    """The data's layout against this release's (None: no data under the prefix yet)."""
    if found is None:
        return Finding(OK, "data", f"no Angora data under prefix {prefix!r} yet (a new deployment)")
    if found == LAYOUT:
        return Finding(OK, "data", f"layout {found} under prefix {prefix!r}, this release's")
    if found < LAYOUT:
        return Finding(ERROR, "data", f"layout {found} under prefix {prefix!r}, older than this release's ({LAYOUT}): "
                                      "stop every Angora process, run `angora migrate`, start them again")
    return Finding(ERROR, "data", f"layout {found} under prefix {prefix!r}, newer than this release's ({LAYOUT}): "
                                  "run the release that wrote it")


def data_lost_finding(data_lost: Mapping[str, Any]) -> Optional[Finding]:
    """An error when a role found Redis back without Angora's data (status `data_lost`); None when never."""
    times = int(data_lost.get("times") or 0)
    if not times:
        return None
    last = data_lost.get("last")
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(last)) if last else "an unknown time"
    return Finding(ERROR, "data", f"Redis came back without Angora's data {times} time(s), the last found at {when}: "
                                  "what it held then was lost (the roles' logs say more); give it persistence "
                                  "(appendonly yes) and noeviction")


def process_findings(alive: Mapping[str, int], leader: str, schedules: int) -> list[Finding]:
    """Matchers and workers alive (none: sent messages wait), and a scheduler when schedules are defined."""
    out = []
    for role, missing in (("matcher", "messages sent wait on the stream until one starts (`angora matcher`)"),
                          ("worker", "executions wait in their queues until one starts (`angora worker`)")):
        n = alive.get(role, 0)
        out.append(Finding(OK, "processes", f"{n} {role}(s) alive") if n else
                   Finding(ERROR, "processes", f"no {role} alive: {missing}"))
    if alive.get("scheduler", 0):
        who = f", {leader} leads" if leader else ", none leads yet"
        out.append(Finding(OK, "processes", f"{alive['scheduler']} scheduler(s) alive{who}"))
    elif schedules:
        out.append(Finding(WARN, "processes", f"no scheduler alive: the {schedules} schedule(s) do not fire and "
                                              "webhooks wait (`angora scheduler`)"))
    return out


def budget_findings(usage: Mapping[str, Any]) -> list[Finding]:
    """The work and memory budgets (store.pressure.usage()): a warning past BUDGET_WARN, an error when used up."""
    out = []
    for name, what in (("work", "accepted work not finished"), ("memory", "Redis memory")):
        b = usage.get(name) or {}
        ratio = b.get("ratio")
        if ratio is None:
            out.append(Finding(OK, "budgets", f"{what}: no limit known"))
            continue
        text = f"{what}: {ratio:.0%} of its budget"
        level = ERROR if b.get("full") else WARN if ratio >= BUDGET_WARN else OK
        suffix = {ERROR: ": new messages are refused with 503", WARN: ": close to refusing new messages"}.get(level, "")
        out.append(Finding(level, "budgets", text + suffix))
    return out


def definition_findings(jobs: int, schedules: int, errors: list[str], warnings: list[str], where: str) -> list[Finding]:
    """The definitions: every error (file:line:col), the warnings' count, or what they define."""
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        return [Finding(ERROR, "definitions", f"{len(errors)} error(s) in {where}: {shown}")]
    out = [Finding(OK, "definitions", f"{jobs} job(s), {schedules} schedule(s) in {where}")]
    if warnings:
        out.append(Finding(WARN, "definitions", f"{len(warnings)} warning(s): `angora validate` lists them"))
    return out


def web_finding(auth_enabled: bool, host: str, error: Optional[str], warning: Optional[str]) -> Finding:
    """Whether the web UI asks for credentials on the address it would serve (core.security.exposure's verdict)."""
    if error:
        return Finding(ERROR, "web", f"on {host}: {error}")
    if warning:
        return Finding(WARN, "web", f"on {host}: {warning}")
    if auth_enabled:
        return Finding(OK, "web", f"serves {host}, credentials required")
    return Finding(WARN, "web", f"serves {host} without credentials (loopback only); set ANGORA_AUTH_TOKEN before "
                                "exposing it")

"""The HTML pages: dashboard, jobs, runs, executions, workflows, schedules, configuration, send a message.

Pages are rendered on the server from the same reads as the JSON API (angora_rq.store.queries); a little vanilla
JavaScript (static/angora.js, static/graph.js) polls the API to keep running things live and posts actions
to the API with the session's CSRF token.
"""
from __future__ import annotations

import math
import shlex
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Optional

from flask import Blueprint, current_app, g, render_template, request

from angora_rq.core.codec import to_str
from angora_rq.core.errors import AngoraError, NotFound
from angora_rq.core.messages import RUN_ID_RE
from angora_rq.core.schema import FAILED, WAITING, Exec, Status
from angora_rq.core.topics import topic_matches
from angora_rq.store.deadletters import KEPT, read_dead_letters
from angora_rq.store.schedules import leader_status, schedule_status
from angora_rq.store.webhooks import deliveries

bp = Blueprint("ui", __name__)

PAGE_SIZE = 25
MAX_PAGE = 40_000
CHAIN_STEPS = 20
CHART_SIZE = 100  # executions in the job page's chart
CHART_FIELDS = ("id", "status", "attempt", "created", "started", "ended", "duration")
NEXT_FIRES = 5
LIVE = WAITING | {Status.running}
RUN_STATUSES = ("queued", "running", "canceling", "succeeded", "failed", "canceled")
LATEST_FIELDS = ("status", "started", "ended", "duration", "created")
HEADER_TTL = 2.0


def _ext() -> Any:
    from angora_rq.web.context import angora

    return angora()


# -- formatting (Jinja filters) ------------------------------------------------------------------------

@bp.app_template_filter("when")
def when(ts: Any) -> str:
    """A unix time as `YYYY-MM-DD HH:MM:SS` UTC, or an en dash."""
    if ts in (None, ""):
        return "\u2013"
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("iso")
def iso(ts: Any) -> str:
    """A unix time as ISO 8601 (for `<time datetime=...>`)."""
    if ts in (None, ""):
        return ""
    return datetime.fromtimestamp(float(ts), tz=timezone.utc).isoformat(timespec="seconds")


@bp.app_template_filter("duration")
def duration(seconds: Any) -> str:
    """Seconds as `3.2 ms`, `120 ms`, `1.25 s`, `12.3 s`, `4 m 05 s` or `2 h 03 m` (angora.js `duration` too):
    a trivial command takes a few milliseconds, which seconds to two decimals showed as `0.00 s`."""
    if seconds in (None, ""):
        return "\u2013"
    s = float(seconds)
    if s <= 0:
        return "0 s"
    if s < 0.01:
        return f"{s * 1000:.1f} ms"
    ms = int(s * 1000 + 0.5)  # rounded half up, as Math.round
    if ms < 1000:
        return f"{ms} ms"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} m {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} m"


@bp.app_template_filter("argv")
def argv(command: Iterable[str]) -> str:
    """A command's argv as a shell would read it."""
    return shlex.join(command)


@bp.app_template_filter("percent")
def percent(rate: Optional[float]) -> str:
    """A 0..1 rate as a whole percentage, or an en dash."""
    return "\u2013" if rate is None else f"{math.floor(rate * 100 + 0.5)} %"


# -- shared reads --------------------------------------------------------------------------------------

def job_states(names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Each job's stats plus its latest execution's live status and timings (two round trips)."""
    ext = _ext()
    stats = ext.queries.job_stats(names)
    latest = [(n, s["last_execution"]) for n, s in stats.items() if s["last_execution"]]
    with ext.r.pipeline(transaction=False) as p:
        for _, xid in latest:
            p.hmget(ext.keys.execution(xid), *(getattr(Exec, f) for f in LATEST_FIELDS))
        p.smembers(ext.keys.paused_jobs())
        *replies, paused = p.execute()
    paused_names = {to_str(v) for v in paused}
    for (name, _), reply in zip(latest, replies):
        merge_latest(stats[name], dict(zip(LATEST_FIELDS, (to_str(v) for v in reply))))
    for name, st in stats.items():
        st["status"] = st.get("status") or st["last_status"] or "never"
        st["paused"] = name in paused_names
    return stats


def merge_latest(stats: dict[str, Any], latest: dict[str, str]) -> None:
    """Prefer the latest execution's own status and times (stats only change when an execution ends)."""
    if not latest.get("status"):
        return
    stats["status"] = latest["status"]
    if latest["status"] in LIVE:
        stats["last_started"] = _float(latest["started"]) or _float(latest["created"])
        stats["last_duration"] = None
    else:
        stats["last_started"] = _float(latest["started"]) or stats["last_started"]
        stats["last_duration"] = _float(latest["duration"]) if latest["duration"] else stats["last_duration"]


def all_job_states() -> dict[str, dict[str, Any]]:
    """job_states of every defined job, read once per request (the dashboard and the header share it)."""
    if "angora_states" not in g:
        g.angora_states = job_states(j.name for j in _ext().snapshot().config.jobs)
    return g.angora_states


def header_counts() -> Optional[dict[str, int]]:
    """How many jobs are running and failing now, for the page header (None when unknown).

    Fresh on the dashboard (it reads every job's state anyway); elsewhere up to HEADER_TTL seconds old, shared by
    the process's requests: with many jobs these reads were most of a small page's cost, and live pages poll.
    """
    ext = current_app.extensions
    cached = ext.get("angora_header")
    if "angora_states" not in g and cached and time.monotonic() - cached[0] < HEADER_TTL:
        return cached[1]
    try:
        states = all_job_states()
    except AngoraError:
        return None
    counts = {
        "running": sum(1 for s in states.values() if s["status"] == "running"),
        "failed": sum(1 for s in states.values() if s["status"] in FAILED),
    }
    ext["angora_header"] = (time.monotonic(), counts)
    return counts


@bp.after_request
def conditional(resp: Any) -> Any:
    """An ETag on every page: a live page polling an unchanged page gets 304 and no body."""
    from angora_rq.web.context import revalidate

    return revalidate(resp)


@bp.context_processor
def layout_context() -> dict[str, Any]:
    """What the base layout needs on every page."""
    return {"header_counts": header_counts, "nav": request.endpoint}


def page_arg() -> int:
    """The 1-based `page` query parameter, clamped to a sane range."""
    page = request.args.get("page", default=1, type=int) or 1
    return min(max(page, 1), MAX_PAGE)


def pages(total: int, page: int) -> dict[str, Any]:
    """Pager data for a template."""
    last = max(1, math.ceil(total / PAGE_SIZE))
    return {"page": page, "last": last, "total": total, "prev": page - 1 if page > 1 else None,
            "next": page + 1 if page < last else None}


def require_id(value: str, what: str) -> str:
    """A run or execution id as Angora makes them; anything else cannot exist (404)."""
    if not RUN_ID_RE.match(value):
        raise NotFound(f"no {what} {value[:80]!r}")
    return value


# -- pages ---------------------------------------------------------------------------------------------

@bp.get("/")
def dashboard() -> str:
    """Every job with its status, last run, duration and success rate."""
    snap = _ext().snapshot()
    states = all_job_states()
    rows = [{"job": j, **states[j.name]} for j in snap.config.jobs]
    newest, dead = read_dead_letters(_ext().r, _ext().keys, 1)
    return render_template("dashboard.html", rows=rows, version=snap.version,
                           status=request.args.get("status", ""), budgets=_ext().pressure.usage(),
                           problems=_ext().definitions.errors, dead_letters=dead, newest_dead=newest)


@bp.get("/jobs/<name>")
def job(name: str) -> str:
    """One job: definition, neighbours, duration statistics, paged execution history, latest output, Run now."""
    ext = _ext()
    snap = ext.snapshot()
    spec = snap.config.job(name)
    if spec is None:
        raise NotFound(f"no job named {name[:80]!r}")
    page = page_arg()
    total, history = ext.queries.job_executions(name, (page - 1) * PAGE_SIZE, PAGE_SIZE)
    state = job_states([name])[name]
    recent = [{k: e[k] for k in CHART_FIELDS} for e in reversed(ext.queries.job_executions(name, 0, CHART_SIZE)[1])]
    return render_template("job.html", job=spec, state=state, history=history, paging=pages(total, page), recent=recent,
                           parents=sorted(snap.graph.parents(name)), children=sorted(snap.graph.children(name)),
                           latest=latest_execution(state.get("last_execution")),
                           durations=ext.queries.job_durations(name))


def latest_execution(xid: Optional[str]) -> Optional[dict[str, Any]]:
    """The execution with its output tail, or None when there is none (or it expired)."""
    if not xid:
        return None
    try:
        return _ext().queries.execution(xid)
    except NotFound:
        return None


@bp.get("/runs")
def runs() -> str:
    """Runs, newest first, filtered by status and job (through the run indexes: paging and totals are exact)."""
    status = request.args.get("status", "")[:64] or None
    job_name = request.args.get("job", "")[:200] or None
    page = page_arg()
    total, items = _ext().queries.runs((page - 1) * PAGE_SIZE, PAGE_SIZE, status=status, job=job_name)
    return render_template("runs.html", runs=with_elapsed(items, time.time()), paging=pages(total, page),
                           status=status or "", job=job_name or "", statuses=RUN_STATUSES, job_names=_job_names())


def with_elapsed(runs: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Each run with `elapsed`: for one still in flight, the seconds since it was created (live pages show it
    growing), else None (a finished run has its `duration`)."""
    for r in runs:
        live = r["active"] > 0 and r["created"] is not None
        r["elapsed"] = max(0.0, now - r["created"]) if live else None
    return runs


def _job_names() -> list[str]:
    try:
        return sorted(j.name for j in _ext().snapshot().config.jobs)
    except AngoraError:
        return []


@bp.get("/runs/<run_id>")
def run(run_id: str) -> str:
    """One run: its workflow as a live graph, job statuses and executions, a Cancel button."""
    q = _ext().queries
    view = q.run(require_id(run_id, "run"))
    return render_template("run.html", run=view, names=run_jobs(view), executions=q.run_executions(run_id))


def run_jobs(view: dict[str, Any]) -> list[str]:
    """The run's jobs in plan order, then any job that ran outside the plan."""
    planned = list(view["plan"].get("jobs") or [])
    seen = set(planned)
    return planned + [n for n in view["jobs"] if n not in seen]


@bp.get("/executions/<xid>")
def execution(xid: str) -> str:
    """One execution: status, timings, exit code, attempt chain, output (live while it runs), actions."""
    view = _ext().queries.execution(require_id(xid, "execution"))
    return render_template("execution.html", ex=view, chain=attempt_chain(view), running=view["status"] in LIVE)


def attempt_chain(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The attempts of this execution, oldest first: back along `replay_of`, forward along `next`."""
    ext = _ext()
    stored = ("attempt", "status", "replay_of", "next")
    fields = ("id", *stored)

    def fetch(xid: str) -> Optional[dict[str, str]]:
        reply = ext.r.hmget(ext.keys.execution(xid), *(getattr(Exec, f) for f in stored))
        raw = dict(zip(stored, (to_str(v) for v in reply)), id=xid)
        return raw if raw["status"] else None

    here = {k: str(view.get(k) or "") for k in fields}
    before: list[dict[str, str]] = []
    after: list[dict[str, str]] = []
    for link, out in (("replay_of", before), ("next", after)):
        cur: Optional[dict[str, str]] = here
        while cur and cur[link] and len(out) < CHAIN_STEPS:
            cur = fetch(cur[link])
            if cur:
                out.append(cur)
    return [*reversed(before), here, *after]


@bp.get("/workflows")
def workflows() -> str:
    """The whole definition graph; `?job=` and `?topic=` highlight part of it."""
    snap = _ext().snapshot()
    topic = request.args.get("topic", "")[:256]
    focus = request.args.get("job", "")[:200]
    marked = sorted(topic_jobs(snap.config.jobs, topic)) if topic else []
    return render_template("workflows.html", graph=snap.graph.to_json(), topic=topic, focus=focus,
                           marked=marked, version=snap.version, jobs=len(snap.config.jobs))


def topic_jobs(jobs: Iterable[Any], topic: str) -> set[str]:
    """Jobs that a topic or pattern links: those it triggers and those that send it."""
    out = set()
    for j in jobs:
        if topic in j.triggers or topic in j.messages:
            out.add(j.name)
        elif any(topic_matches(t, topic) for t in j.triggers):
            out.add(j.name)
        elif any(topic_matches(topic, m) for m in j.messages):
            out.add(j.name)
    return out


@bp.get("/schedules")
def schedules() -> str:
    """Schedules from the definitions: when they fire next, what they sent last, who leads the schedulers."""
    ext = _ext()
    snap = ext.snapshot()
    now = time.time()
    state, leader = schedule_state(snap, now)
    rows = [{"s": s, "next": next_fires(s, now), "state": state.get(s.name, {})} for s in snap.config.schedules]
    return render_template("schedules.html", rows=rows, leader=leader, version=snap.version)


def schedule_state(snap: Any, now: float) -> tuple[dict[str, dict[str, Any]], Optional[dict[str, Any]]]:
    """Each schedule's last tick/run (by name) and the scheduler leader."""
    ext = _ext()
    rows = schedule_status(ext.r, ext.keys, snap, now)
    return {row["name"]: row for row in rows}, leader_status(ext.r, ext.keys)


def next_fires(schedule: Any, now: float, count: int = NEXT_FIRES) -> list[float]:
    """The next fire times (unix) of a schedule, or [] when they cannot be computed."""
    try:
        from angora_rq.core.ticks import next_fire
    except ImportError:
        return []
    out: list[float] = []
    at = now
    try:
        for _ in range(count):
            at = next_fire(schedule, at).timestamp()
            out.append(at)
    except ValueError:  # a cron expression croniter cannot follow
        pass
    return out


@bp.get("/webhooks")
def webhooks() -> str:
    """The definitions' webhooks with their latest delivery attempts."""
    ext = _ext()
    snap = ext.snapshot()
    hooks = deliveries(ext.r, ext.keys, snap.config.webhooks)
    return render_template("webhooks.html", hooks=hooks, version=snap.version,
                           leader=leader_status(ext.r, ext.keys) if hooks else None)


@bp.get("/dead-letters")
def dead_letters() -> str:
    """The messages no matcher could dispatch, newest first, each with a Send again button."""
    ext = _ext()
    letters, total = read_dead_letters(ext.r, ext.keys)
    return render_template("dead_letters.html", letters=letters, total=total, kept=KEPT)


@bp.get("/config")
def config() -> str:
    """The definitions loaded: version, files, warnings, and the files' current errors."""
    return render_template("config.html", status=_ext().definitions.status())


@bp.get("/messages/new")
def send_message() -> str:
    """A form to send a message (topic, params, optional run id); the run page follows."""
    topics: list[str] = []
    try:
        jobs = _ext().snapshot().config.jobs
    except AngoraError:
        jobs = ()
    for j in jobs:
        topics.extend(t for t in j.triggers if "*" not in t and "#" not in t)
    return render_template("send.html", topics=sorted(set(topics)), topic=request.args.get("topic", "")[:256])


# -- errors --------------------------------------------------------------------------------------------

@bp.errorhandler(AngoraError)
def angora_error_page(e: AngoraError) -> Any:
    """Unknown job/run/execution (404), no definitions loaded (503), ...: a page, never a traceback."""
    return render_template("error.html", status=e.status, message=e.message), e.status


# -- small helpers -------------------------------------------------------------------------------------

def _float(v: Any) -> Optional[float]:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


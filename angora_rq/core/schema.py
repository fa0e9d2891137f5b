"""Every field of Angora's Redis hashes and every status set, named once (pure: no I/O).

Python writes and reads fields through these names (`Exec.status`, `Run.job_status + job`), and so do the Lua
scripts in store/lua/: a script writes `EXEC.status` or `STATUS.queued` (the namespaces in `LUA`), and the loader
(store/scripts.py) replaces each such name by its value here, as a Lua string ('s'), when it reads the script;
a name this module does not define stops the load. Substituting once, at load time, keeps one source of
truth at no cost per call: names passed in ARGV would add arguments to every call (the client's cost per argument
was most of a dispatch's), and a preamble of Lua tables would be built again by every call.

In each namespace the attribute is the field's name in Python and in Lua, and its value the field in Redis.
"""
from __future__ import annotations


class Names:
    """A namespace of Redis names: every public str attribute is one."""

    @classmethod
    def fields(cls) -> dict[str, str]:
        """Attribute -> Redis name, in definition order."""
        return {k: v for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, str)}


class Exec(Names):
    """Fields of an execution hash (`Keys.execution`): one attempt of one job in one run.

    Short names and no empty fields: an execution is the record Redis keeps most of, and a hash whose fields and
    values are all short (Redis 6.2's hash-max-ziplist-value: 64 bytes) stays in the compact ziplist encoding, about
    a fifth of a hashtable's size. Its id is the key's last part; its job's definition is in `Keys.definitions`
    under `Defs.job` + its job (by its `config_version`), not copied into each execution.
    """

    job = "j"
    run = "r"
    attempt = "a"
    status = "s"
    queue = "q"
    topic = "t"
    origin = "o"
    params = "p"  # JSON; absent when {}
    config_version = "v"  # the definitions version whose spec of `job` it runs
    created = "c"
    replay_of = "rp"  # absent unless a replay or retry
    delay_until = "du"  # absent unless delayed
    limit = "lm"  # the job's concurrency; absent when none
    started = "st"
    worker = "w"
    host = "h"
    ended = "en"
    exit_code = "x"
    signal = "sg"  # absent unless killed by a signal
    reason = "rs"
    duration = "d"  # layout 1's; now absent: ended - started
    tail = "tl"  # the output's tail when short (TAIL_INLINE); a longer one is in `Keys.tail`
    next = "nx"  # the execution that replays or retries this one
    late = "lt"  # JSON: an end its worker reported after it was recorded or replayed (refused, kept to be seen)
    outputs = "out"  # JSON: the KEY=VALUE lines its command wrote to $ANGORA_OUTPUT (core/outputs.py); absent when none
    approval = "ap"  # an approval gate's decision: approved | rejected (absent while it waits)
    decided_by = "db"  # who took it ('timeout' when approval_timeout passed)
    decided_at = "da"
    approval_deadline = "ad"  # when approval_timeout passes (absent = never)


class Run(Names):
    """Fields of a run hash (`Keys.run`); the per-job ones are a prefix + the job's name. Its id is the key's."""

    created = "c"
    topic = "t"
    origin = "o"
    plan = "pl"  # the plan's ref: its JSON is in `Keys.definitions(config_version)` under `Defs.plan` + ref
    params = "p"  # absent when {}
    config_version = "v"
    active = "a"  # messages in flight + executions not finished
    ended = "en"  # when `active` last came to 0 (store/lua/run_count.lua); meaningful while it is 0; absent in old runs
    canceled = "cn"  # '1' once canceled
    schedule = "sc"  # runs a schedule started: its name, the tick (ms) and how many ticks it covers
    tick = "tk"
    covers = "cv"
    job_status = "s:"  # + job: the job's latest status in the run
    job_execution = "e:"  # + job: the latest execution's id
    execution = "x:"  # + execution id: its job (every execution of the run)
    join = "j:"  # + job: the parent_success join of the job has fired in this run
    rerun_of = "rr"  # a run started by `rerun`: the run it repeats


class JobStats(Names):
    """Fields of a job's statistics hash (`Keys.job_stats`)."""

    last_execution = "le"
    last_run = "lr"
    last_status = "ls"
    last_started = "lst"
    last_ended = "len"
    last_duration = "ld"
    succeeded = "succeeded"  # these three: counts written before `count`/`seconds` replaced them (still read)
    failed = "failed"
    total = "total"
    count = "h:"  # + final status + ":" + bucket bound: commands that ended so, in that duration bucket
    seconds = "d:"  # + final status: their durations' sum


class Defs(Names):
    """Fields of a definitions version's hash (`Keys.definitions`): what executions and runs of it refer to."""

    job = "j:"  # + job name: JSON of JobDef.to_json()
    plan = "p:"  # + plan ref (core.plans.plan_ref): a run plan's JSON
    follow = "f:"  # + job name: JSON {topic: [follower spec JSON]} of the topics a worker dispatches itself


class Metrics(Names):
    """Fields of the counters hash (`Keys.metrics`): what /metrics reports that no other record counts."""

    messages = "messages:"  # + 'root' or 'job': messages the matchers took off the stream (acknowledged)
    refused = "refused:"  # + reason (invalid, backlog, key_reuse): sends refused
    dead_letters = "dead"  # messages the matchers could not dispatch and put aside (Keys.dead_letters)
    data_lost = "lost"  # times a role found Redis back without Angora's data (processes/datawatch.py)
    data_lost_at = "lost_at"  # when the last of those was found (unix time)


class Schedule(Names):
    """Fields of a schedule's state hash (`Keys.schedule`)."""

    last = "last"  # the last tick handled (ms)
    token = "token"  # the fencing token of the leader that handled it
    run = "run"
    entry = "entry"
    sent_at = "sent_at"
    sent = "sent"
    skipped = "skipped"
    last_skipped = "last_skipped"
    skip_reason = "skip_reason"  # why the last skipped tick was skipped: `overlap <run>` or a budget's reason


class RqJob(Names):
    """Fields of RQ's job hash (`keys.rq_job`), fixed by RQ (rqcompat.job_mapping writes a new one whole)."""

    created_at = "created_at"
    enqueued_at = "enqueued_at"
    data = "data"
    success_callback_name = "success_callback_name"
    failure_callback_name = "failure_callback_name"
    stopped_callback_name = "stopped_callback_name"
    started_at = "started_at"
    ended_at = "ended_at"
    last_heartbeat = "last_heartbeat"
    worker_name = "worker_name"
    group_id = "group_id"
    origin = "origin"
    description = "description"
    timeout = "timeout"
    result_ttl = "result_ttl"
    failure_ttl = "failure_ttl"
    status = "status"


class Status(Names):
    """Statuses of an execution, and of a job in its run (`Run.job_status`); the last three are a run's only."""

    held = "held"  # its job is paused, or at its concurrency limit
    awaiting_approval = "awaiting_approval"  # its job is an approval gate: someone must approve or reject it
    queued = "queued"
    delayed = "delayed"  # waiting for its replay backoff
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    killed = "killed"
    replaying = "replaying"  # failed; its next attempt is delayed
    canceled = "canceled"
    skipped = "skipped"  # failed, then marked succeeded by a user
    rejected = "rejected"  # its approval gate was rejected (by someone, or when approval_timeout passed)
    pending = "pending"  # planned, not dispatched yet
    upstream_failed = "upstream_failed"
    not_triggered = "not_triggered"


class RqWorker(Names):
    """Fields of RQ's worker hash (`keys.rq_worker`) that Angora's worker keeps, fixed by RQ (rq-dashboard, rq info)."""

    state = "state"  # 'busy' or 'idle'
    birth = "birth"
    last_heartbeat = "last_heartbeat"
    death = "death"
    queues = "queues"  # RQ's names of the worker's queues, comma-separated
    pid = "pid"
    hostname = "hostname"
    ip_address = "ip_address"
    version = "version"  # RQ's version
    python_version = "python_version"
    successful_job_count = "successful_job_count"
    failed_job_count = "failed_job_count"
    total_working_time = "total_working_time"


class RqStatus(Names):
    """RQ's job statuses (fixed by RQ)."""

    queued = "queued"
    started = "started"
    deferred = "deferred"
    scheduled = "scheduled"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


class Entry(Names):
    """Fields of a message's stream entry (messages.Message.to_fields)."""

    topic = "t"
    run = "r"
    origin = "o"
    sent = "s"
    params = "p"


class Event(Names):
    """Prefixes of the reserved topics events are published on (core/events.py), and the origin of their messages."""

    run = "angora.run."  # + started | succeeded | failed | canceled
    execution = "angora.execution."  # + the execution's new status, or approved
    origin = "event:"  # + the event's topic: the origin of an event's message (its run publishes no job events)


# -- status sets: each defined here only ----------------------------------------------------------------------
WAITING = frozenset({Status.held, Status.queued, Status.delayed, Status.awaiting_approval})  # not started yet
NOT_STARTED = WAITING | {Status.pending}  # a job of a run that has not started
SUCCEEDED = frozenset({Status.succeeded, Status.skipped})  # what a parent_success join waits for
FAILED = frozenset({Status.failed, Status.killed, Status.upstream_failed, Status.rejected})  # fails its run
FINAL = FAILED | SUCCEEDED | {Status.not_triggered, Status.canceled}  # will not change by itself
SKIPPABLE = FAILED | {Status.replaying, Status.canceled}  # a user may mark it succeeded (`skip`)

# The namespaces Lua scripts see, by their Lua name.
LUA: dict[str, type[Names]] = {
    "EXEC": Exec, "RUN": Run, "JOBSTATS": JobStats, "DEFS": Defs, "METRICS": Metrics, "SCHEDULE": Schedule,
    "RQJOB": RqJob, "RQWORKER": RqWorker,
    "STATUS": Status, "RQSTATUS": RqStatus, "ENTRY": Entry,
    "EVENT": Event,
}

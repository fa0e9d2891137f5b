"""Every Redis key name Angora uses, in one place (pure: no I/O).

Angora's own keys share one prefix. RQ's keys are fixed by RQ (rq-dashboard must find them); they are
spelled here too so that nothing else builds a key, and tests/core/test_keys.py checks them against RQ's classes.

Two deployments with different prefixes may share a Redis database. RQ has one namespace (`rq:`), so each
deployment's queues carry its prefix in the name RQ knows them by (`Keys.rq_name`): `rq:queue:default` under the
default prefix (as before, and as a stock `rq worker default` expects), `rq:queue:<prefix>:default` under any
other. Angora's queue names cannot hold a colon, so no name of one deployment is a name of another. The queue,
its registries and RQ's per-queue worker set follow from the name; job hashes are `rq:job:<execution id>` (random
32-hex ids, so never shared); the two sets RQ keeps for the whole database (`rq:queues`, `rq:workers`) hold members
of every deployment, and each adds and removes only its own.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

MATCHER_GROUP = "matchers"
DEFAULT_PREFIX = "angora"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = DEFAULT_PREFIX

    # -- the message bus ---------------------------------------------------------------------------
    def stream(self) -> str:
        """Stream of every accepted message (consumer group MATCHER_GROUP)."""
        return f"{self.prefix}:messages"

    def work(self) -> str:
        """Counter of accepted work not finished: messages not yet dispatched + executions queued, held, delayed or
        running (the sum of every run's `active`); the work budget is checked against it."""
        return f"{self.prefix}:work"

    def accepted(self) -> str:
        """Counter of root messages ever accepted (SEND): until the next INFO reading, the memory budget charges each
        one a fixed size (core/pressure.py)."""
        return f"{self.prefix}:accepted"

    def idempotency(self, key: str) -> str:
        """The first answer to a send made with the Idempotency-Key `key` (run id, entry id, fingerprint)."""
        return f"{self.prefix}:idem:send:{key}"

    def resend_idempotency(self, entry: str) -> str:
        """The first answer to sending a dead letter again, as `idempotency` (its own namespace)."""
        return f"{self.prefix}:idem:dead:{entry}"

    def tick_idempotency(self, schedule: str, tick_ms: int) -> str:
        """The first answer to a schedule's tick, as `idempotency` (its own namespace: no user key can take it)."""
        return f"{self.prefix}:idem:tick:{schedule}:{tick_ms}"

    def dead_letters(self) -> str:
        """List of the messages the matchers put aside as dead letters (JSON, newest first, capped): entries that
        failed to dispatch alone, and were to blame (processes/matcher.py, store/lua/dead_letter.lua)."""
        return f"{self.prefix}:messages:dead"

    def metrics(self) -> str:
        """Hash of counters kept for /metrics (fields: schema.Metrics) that no other record holds."""
        return f"{self.prefix}:metrics"

    # -- executions, jobs, runs --------------------------------------------------------------------
    def execution(self, execution_id: str) -> str:
        """Hash of one execution (one attempt of one job in one run)."""
        return f"{self.prefix}:exec:{execution_id}"

    def job_stats(self, job: str) -> str:
        """Hash of a job's latest status and counters."""
        return f"{self.prefix}:job:{job}"

    def tail(self, execution_id: str) -> str:
        """String holding an execution's output tail while it runs, and after when too long for its hash."""
        return f"{self.prefix}:tail:{execution_id}"

    def job_executions(self, job: str) -> str:
        """List of a job's latest execution ids, newest first (the job's history index, `history` long)."""
        return f"{self.prefix}:job:{job}:execs"

    def run(self, run_id: str) -> str:
        """Hash of a run: plan, per-job statuses, its executions, counters."""
        return f"{self.prefix}:run:{run_id}"

    def runs(self) -> str:
        """Sorted set of run ids, scored by start time: every run kept, the order history is trimmed in."""
        return f"{self.prefix}:runs"

    def approvals(self) -> str:
        """Sorted set of execution ids awaiting approval, scored by when their approval_timeout passes (+inf)."""
        return f"{self.prefix}:approvals"

    def runs_unsettled(self) -> str:
        """Hash run id -> change counter: runs whose place in the run indexes may be out of date, from their first
        message until the settler (store/runindex.py) sees them finished, and again whenever something reopens
        them (each reopening bumps the counter, so a settler that read the run before knows its read is stale)."""
        return f"{self.prefix}:runs:unsettled"

    def runs_settler(self) -> str:
        """String, a lease of a few seconds: a janitor is settling the run indexes (processes/janitor.py), so the
        others, which would read the same runs, leave it to that one."""
        return f"{self.prefix}:runs:settler"

    def runs_index_built(self) -> str:
        """Marker: the run indexes cover every run of `runs` (set once, after adding the older runs to settle)."""
        return f"{self.prefix}:runs:indexed"

    def runs_by_status(self, status: str) -> str:
        """Sorted set of finished runs with this status (succeeded, failed, canceled), scored by start time."""
        return f"{self.prefix}:runs:status:{status}"

    def runs_by_job(self, job: str) -> str:
        """Sorted set of the runs in which `job` ran (or was blocked by a failure), scored by start time."""
        return f"{self.prefix}:runs:job:{job}"

    def runs_indexed_jobs(self) -> str:
        """Set of the job names that have a runs_by_job index (so trimming finds them all)."""
        return f"{self.prefix}:runs:jobs"

    def runs_scratch(self, token: str) -> str:
        """Short-lived sorted set holding one request's intersection of two run indexes."""
        return f"{self.prefix}:runs:scratch:{token}"

    def definitions(self, version: str) -> str:
        """Hash of one definitions version: the specs and run plans its executions and runs refer to."""
        return f"{self.prefix}:defs:{version}"

    def definitions_index(self) -> str:
        """Sorted set of definitions versions, scored by their last use (the janitor drops unused ones)."""
        return f"{self.prefix}:defs"

    def schema(self) -> str:
        """String: the version of the layout of everything under the prefix (see store/layout.py)."""
        return f"{self.prefix}:schema"

    def delayed(self) -> str:
        """Sorted set of execution ids waiting for a replay backoff, scored by due time."""
        return f"{self.prefix}:delayed"

    # -- events and webhooks -----------------------------------------------------------------------
    def events(self) -> str:
        """Hash event topic -> who listens ('j' jobs, 'w' webhooks), as the definitions in force say; field
        '#seq' numbers the runs events start."""
        return f"{self.prefix}:events"

    def events_on(self) -> str:
        """'1' while some event has a listener (written with `events`): SEND reads it with its counters, so
        without listeners a send looks for none."""
        return f"{self.prefix}:events:on"

    def webhook_outbox(self) -> str:
        """List of events (JSON) for webhooks, newest first, waiting to be turned into deliveries."""
        return f"{self.prefix}:webhooks:outbox"

    def webhook_due(self) -> str:
        """Sorted set of webhook deliveries (JSON), scored by when their next attempt is due."""
        return f"{self.prefix}:webhooks:due"

    def webhook_log(self, name: str) -> str:
        """List of a webhook's delivery attempts (JSON), newest first, bounded."""
        return f"{self.prefix}:webhook:{name}:log"

    # -- processes ---------------------------------------------------------------------------------
    def workers(self) -> str:
        """Set of Angora worker names ever registered and not yet reaped."""
        return f"{self.prefix}:workers"

    def worker_alive(self, name: str) -> str:
        """Heartbeat key of a worker (expires when the worker stops beating)."""
        return f"{self.prefix}:worker:{name}:alive"

    def worker_inflight(self, name: str) -> str:
        """Set of execution ids a worker has claimed and not finished."""
        return f"{self.prefix}:worker:{name}:inflight"

    def worker_guard(self, name: str) -> str:
        """Key a worker WATCHes with its executions while it records their ends (store/fence.py: still_ours)."""
        return f"{self.prefix}:worker:{name}:guard"

    def worker_control(self, name: str) -> str:
        """List of control requests for a worker (e.g. `kill <execution id>`); its waiter thread blocks on it."""
        return f"{self.prefix}:worker:{name}:control"

    def bell(self, queue: str) -> str:
        """List a dispatch pushes a token to, so idle workers of `queue` wake at once (BLPOP)."""
        return f"{self.prefix}:bell:{queue}"

    def orphans(self) -> str:
        """List of execution ids taken from dead workers, waiting to be replayed."""
        return f"{self.prefix}:orphans"

    def matcher_alive(self, name: str) -> str:
        """Heartbeat key of a matcher."""
        return f"{self.prefix}:matcher:{name}:alive"

    def heartbeats(self) -> str:
        """Hash role:name -> last heartbeat time, for /healthz."""
        return f"{self.prefix}:heartbeats"

    # -- operations (schedules, pause, limits, configuration) ---------------------------------------
    def config(self) -> str:
        """Hash holding the current definitions (version, files) shared by every process."""
        return f"{self.prefix}:config"

    def paused_jobs(self) -> str:
        """Set of paused job names."""
        return f"{self.prefix}:paused:jobs"

    def paused_queues(self) -> str:
        """Set of paused queue names."""
        return f"{self.prefix}:paused:queues"

    def held(self, job: str) -> str:
        """List of execution ids waiting for a concurrency slot of `job`, in order."""
        return f"{self.prefix}:held:{job}"

    def paused_held(self, job: str) -> str:
        """List of execution ids dispatched while `job` was paused, in order; resume queues them."""
        return f"{self.prefix}:paused:held:{job}"

    def slots(self, job: str) -> str:
        """Set of execution ids of `job` currently holding a concurrency slot."""
        return f"{self.prefix}:slots:{job}"

    def scheduler_lease(self) -> str:
        """Leader lease of the schedulers (value: holder name)."""
        return f"{self.prefix}:scheduler:lease"

    def scheduler_fence(self) -> str:
        """Counter handing out fencing tokens to scheduler leaders."""
        return f"{self.prefix}:scheduler:fence"

    def schedule(self, name: str) -> str:
        """Hash of one schedule's state (last tick, next fire time, fencing token)."""
        return f"{self.prefix}:schedule:{name}"

    # -- layout 1's keys, that `angora migrate` converts (core/layout.py) -------------------------------
    def v1_run_executions(self, run_id: str) -> str:
        """Layout 1: sorted set of a run's execution ids."""
        return f"{self.prefix}:run:{run_id}:execs"

    def v1_join(self, run_id: str, job: str) -> str:
        """Layout 1: marker that the parent_success join of `job` in `run_id` has fired (`*` as job: a pattern)."""
        return f"{self.prefix}:join:{run_id}:{job}"

    def v1_dedupe_pattern(self) -> str:
        """Layout 1: the pattern of the markers that a stream entry was dispatched to a job."""
        return f"{self.prefix}:dedupe:*"

    # -- RQ's keys of this deployment's queues (see the module's docstring) ---------------------------
    def rq_name(self, queue: str) -> str:
        """The name RQ knows queue `queue` by: itself under the default prefix, `<prefix>:<queue>` otherwise."""
        return queue if self.prefix == DEFAULT_PREFIX else f"{self.prefix}:{queue}"
    def running_version(self) -> str:
        """The definitions version the matchers run (expires when no matcher publishes it); the web follows it."""
        return f"{self.prefix}:config:running"

    # -- the web role --------------------------------------------------------------------------------------
    def web_secret(self) -> str:
        """The web sessions' signing key, generated once (unless ANGORA_SECRET_KEY is set)."""
        return f"{self.prefix}:web:secret"

    def web_session(self, session_id: str) -> str:
        """A logged-in browser session (value: credentials fingerprint); deleted at logout, expires with it."""
        return f"{self.prefix}:web:session:{session_id}"

    def login_failures(self, client: str) -> str:
        """Counter of failed logins from one client address in the current window."""
        return f"{self.prefix}:web:login-failures:{client}"


    def rq_queue(self, queue: str) -> str:
        """RQ's list of queued job ids (`rq_queue("")` is the prefix of every queue of this deployment)."""
        return rq_queue_named(self.rq_name(queue))

    def rq_started(self, queue: str) -> str:
        """RQ's StartedJobRegistry (members `job_id:execution_id`, score = expiry)."""
        return f"rq:wip:{self.rq_name(queue)}"

    def rq_finished(self, queue: str) -> str:
        """RQ's FinishedJobRegistry (score = expiry)."""
        return f"rq:finished:{self.rq_name(queue)}"

    def rq_failed(self, queue: str) -> str:
        """RQ's FailedJobRegistry (score = expiry)."""
        return f"rq:failed:{self.rq_name(queue)}"

    def rq_canceled(self, queue: str) -> str:
        """RQ's CanceledJobRegistry (Angora's score = expiry, like the finished and failed registries)."""
        return f"rq:canceled:{self.rq_name(queue)}"

    def own_queue(self, rq_queue_key: str) -> Optional[str]:
        """The queue a member of RQ_QUEUES names when it is one of this deployment's, else None."""
        head = self.rq_queue("")
        if not rq_queue_key.startswith(head):
            return None
        queue = rq_queue_key[len(head):]
        return queue if queue and ":" not in queue else None


# -- RQ's keys shared by every deployment on the database (fixed by RQ; checked against RQ in tests) ----------
RQ_QUEUES = "rq:queues"
RQ_WORKERS = "rq:workers"


def rq_queue_named(rq_name: str) -> str:
    """RQ's list of a queue known to RQ by `rq_name` (as rq-dashboard names it: Keys.rq_name already applied)."""
    return f"rq:queue:{rq_name}"


def rq_registry_named(kind: str, rq_name: str) -> str:
    """One of RQ's registries (`wip`, `finished`, `failed`) of a queue known to RQ by `rq_name`."""
    return f"rq:{kind}:{rq_name}"


def rq_job(job_id: str) -> str:
    """RQ's job hash."""
    return f"rq:job:{job_id}"


def rq_worker(name: str) -> str:
    """RQ's worker hash."""
    return f"rq:worker:{name}"


def rq_worker_executions(name: str) -> str:
    """RQ's set of a worker's active executions (Angora's worker keeps none there; its death deletes the key)."""
    return f"rq:worker:{name}:executions"


def rq_queue_workers(rq_name: str) -> str:
    """RQ's set of the worker hashes serving the queue RQ knows by `rq_name` (Keys.rq_name already applied)."""
    return f"rq:workers:{rq_name}"

"""Every Redis key name Angora uses, in one place (pure: no I/O).

Angora's own keys share one prefix. RQ's keys are fixed by RQ (rq-dashboard must find them); they are
spelled here too so that nothing else builds a key, and tests/core/test_keys.py checks them against RQ's classes.
"""
from __future__ import annotations

from dataclasses import dataclass

MATCHER_GROUP = "matchers"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "angora"

    # -- the message bus ---------------------------------------------------------------------------
    def stream(self) -> str:
        """Stream of every accepted message (consumer group MATCHER_GROUP)."""
        return f"{self.prefix}:messages"

    def dedupe(self, entry_id: str, job: str) -> str:
        """Marker that stream entry `entry_id` has been dispatched to `job`."""
        return f"{self.prefix}:dedupe:{entry_id}:{job}"

    def join(self, run_id: str, job: str) -> str:
        """Marker that the parent_success join of `job` in `run_id` has fired."""
        return f"{self.prefix}:join:{run_id}:{job}"

    # -- executions, jobs, runs --------------------------------------------------------------------
    def execution(self, execution_id: str) -> str:
        """Hash of one execution (one attempt of one job in one run)."""
        return f"{self.prefix}:exec:{execution_id}"

    def job_stats(self, job: str) -> str:
        """Hash of a job's latest status and counters."""
        return f"{self.prefix}:job:{job}"

    def job_executions(self, job: str) -> str:
        """Sorted set of a job's execution ids, scored by creation time."""
        return f"{self.prefix}:job:{job}:execs"

    def run(self, run_id: str) -> str:
        """Hash of a run: plan, per-job statuses, counters."""
        return f"{self.prefix}:run:{run_id}"

    def run_executions(self, run_id: str) -> str:
        """Sorted set of a run's execution ids, scored by creation time."""
        return f"{self.prefix}:run:{run_id}:execs"

    def runs(self) -> str:
        """Sorted set of run ids, scored by start time."""
        return f"{self.prefix}:runs"

    def delayed(self) -> str:
        """Sorted set of execution ids waiting for a replay backoff, scored by due time."""
        return f"{self.prefix}:delayed"

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


# -- RQ's own key names (fixed by RQ; checked against RQ in tests) -------------------------------------
RQ_QUEUES = "rq:queues"
RQ_WORKERS = "rq:workers"


def rq_queue(name: str) -> str:
    """RQ's list of queued job ids."""
    return f"rq:queue:{name}"


def rq_job(job_id: str) -> str:
    """RQ's job hash."""
    return f"rq:job:{job_id}"


def rq_started(queue: str) -> str:
    """RQ's StartedJobRegistry (members `job_id:execution_id`, score = expiry)."""
    return f"rq:wip:{queue}"


def rq_finished(queue: str) -> str:
    """RQ's FinishedJobRegistry (score = expiry)."""
    return f"rq:finished:{queue}"


def rq_failed(queue: str) -> str:
    """RQ's FailedJobRegistry (score = expiry)."""
    return f"rq:failed:{queue}"


def rq_worker(name: str) -> str:
    """RQ's worker hash."""
    return f"rq:worker:{name}"

"""`GET /metrics`: Prometheus metrics, derived from Redis at each scrape (store/metrics.py: two round trips).

No counter lives in a web process: each scrape reads the counts every matcher, worker and web process of every
host keeps in Redis, so any web process answers the same and a restart loses nothing. The auth rules are the
API's; ANGORA_METRICS_TOKEN, when set, is a bearer token that opens /metrics alone (web/auth.py).
Angora's job is the label `angora_job`: Prometheus gives every scraped series a `job` label of its own (the scrape
job) and would rename ours to `exported_job`.
"""
from __future__ import annotations

import time
from typing import Any, Iterator, Optional

from flask import Blueprint, Response, current_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.utils import floatToGoString

from angora_rq.core.errors import Unavailable
from angora_rq.core.metrics import alive_by_role, entry_age, histograms, status_counts
from angora_rq.core.pressure import Memory
from angora_rq.core.redis_setup import eviction_warning
from angora_rq.core.schema import Metrics
from angora_rq.store.connection import redis_errors
from angora_rq.store.metrics import REFUSALS, Sample, read_sample

bp = Blueprint("metrics", __name__)
ROLES = ("matcher", "worker", "scheduler")


class Scrape:
    """A prometheus_client collector over one Sample (generate_latest takes any object with collect())."""

    def __init__(self, sample: Sample, backlog: int, now: float, memory: Optional[Memory] = None) -> None:
        self.s = sample
        self.backlog = backlog
        self.now = now
        self.memory = memory

    def collect(self) -> Iterator[Metric]:
        """Every metric family of the sample."""
        yield from self.messages()
        yield from self.executions()
        yield from self.waiting()
        yield from self.processes()
        yield from self.redis_memory()

    def redis_memory(self) -> Iterator[Metric]:
        """Redis' memory against the budget, and whether a full Redis would delete keys (none when Redis refuses
        INFO)."""
        m = self.memory
        if m is None:
            return
        yield GaugeMetricFamily("angora_redis_memory_used_bytes", "Redis used_memory (the web process' last "
                                "reading, at most 1 s old).", value=m.used)
        yield GaugeMetricFamily("angora_redis_memory_budget_bytes", "The memory budget: past it sends get 503 "
                                "(ANGORA_MAX_MEMORY, 90% of maxmemory or half the host's memory; 0 = none).",
                                value=m.limit)
        yield GaugeMetricFamily("angora_redis_evicting", "1 when Redis' maxmemory-policy is not noeviction: once "
                                "full it deletes keys, Angora's among them, without an error.",
                                value=int(eviction_warning(m.policy) is not None))

    def messages(self) -> Iterator[Metric]:
        """Messages taken off the stream and refused, the stream, the matchers' lag and the backlog budget."""
        s = self.s
        taken = CounterMetricFamily("angora_messages", "Messages the matchers took off the stream, by origin "
                                    "(root: sent from outside; job: sent by a job that succeeded).", labels=["origin"])
        for origin in ("root", "job"):
            taken.add_metric([origin], int(s.counters.get(Metrics.messages + origin) or 0))
        refused = CounterMetricFamily("angora_messages_refused", "Sends refused: invalid (HTTP 400), backlog "
                                      "(budget used up, 503), key_reuse (idempotency key of another message, 409).",
                                      labels=["reason"])
        for reason in REFUSALS:
            refused.add_metric([reason], int(s.counters.get(Metrics.refused + reason) or 0))
        yield taken
        yield refused
        yield CounterMetricFamily("angora_messages_dead_lettered", "Messages the matchers put aside as dead "
                                  "letters: each failed to dispatch alone, for a reason trying again would not change "
                                  "(GET /api/v1/dead-letters).", value=int(s.counters.get(Metrics.dead_letters) or 0))
        yield CounterMetricFamily("angora_redis_data_lost", "Times a role found Redis back after an outage without "
                                  "Angora's data (restarted without persistence, a replica promoted before it synced, "
                                  "flushed): what it held then was lost.",
                                  value=int(s.counters.get(Metrics.data_lost) or 0))
        yield GaugeMetricFamily("angora_stream_length", "Entries in the message stream (the backlog).",
                                value=s.stream_length)
        yield GaugeMetricFamily("angora_stream_pending", "Entries read by a matcher and not yet dispatched.",
                                value=s.pending)
        yield GaugeMetricFamily("angora_matcher_lag_seconds", "Age of the oldest message no matcher has "
                                "dispatched yet (0 when none waits).", value=entry_age(s.oldest_entry, self.now))
        yield GaugeMetricFamily("angora_backlog_budget", "Accepted-but-unfinished work allowed before sends get "
                                "503 (ANGORA_BACKLOG of this web process; 0 = no limit).", value=self.backlog)
        yield GaugeMetricFamily("angora_backlog_used_ratio", "Accepted-but-unfinished work (messages not "
                                "dispatched, executions queued, held, delayed or running) / backlog budget (0 with "
                                "no limit).", value=s.work / self.backlog if self.backlog else 0.0)

    def executions(self) -> Iterator[Metric]:
        """Commands that ended, per job and final status, with their durations as histograms."""
        ended = CounterMetricFamily("angora_executions", "Commands that ended, by job and final status "
                                    "(succeeded, failed, killed, replaying: failed, another attempt follows).",
                                    labels=["angora_job", "status"])
        durations = HistogramMetricFamily("angora_execution_duration_seconds", "How long commands ran, by job and "
                                          "final status.", labels=["angora_job", "status"])
        for job, stats in sorted(self.s.jobs.items()):
            for status, n in sorted(status_counts(stats).items()):
                ended.add_metric([job, status], n)
            for status, h in sorted(histograms(stats).items()):
                buckets = [(floatToGoString(float(le)), n) for le, n in h.cumulative()]
                durations.add_metric([job, status], buckets, h.total_seconds)
        yield ended
        yield durations

    def waiting(self) -> Iterator[Metric]:
        """Executions queued, running, held and delayed; what is paused."""
        s = self.s
        queued = GaugeMetricFamily("angora_queue_length", "Executions waiting in each RQ queue.", labels=["queue"])
        running = GaugeMetricFamily("angora_executions_running", "Executions started from each queue and not "
                                    "finished (RQ's started registry).", labels=["queue"])
        for q in sorted(s.queued):
            queued.add_metric([q], s.queued[q])
            running.add_metric([q], s.running[q])
        held = GaugeMetricFamily("angora_executions_held", "Executions held, by job and why (concurrency: waiting "
                                 "for a slot; paused: their job is paused).", labels=["angora_job", "reason"])
        for job in sorted(s.held):
            held.add_metric([job, "concurrency"], s.held[job])
            held.add_metric([job, "paused"], s.paused_held[job])
        paused = GaugeMetricFamily("angora_paused", "Paused jobs and queues.", labels=["kind"])
        paused.add_metric(["job"], s.paused_jobs)
        paused.add_metric(["queue"], s.paused_queues)
        yield from (queued, running, held, paused)
        yield GaugeMetricFamily("angora_executions_delayed", "Replays waiting for their backoff.", value=s.delayed)

    def processes(self) -> Iterator[Metric]:
        """Processes alive by role, and the scheduler leader."""
        alive = alive_by_role(self.s.beats, self.now)
        family = GaugeMetricFamily("angora_processes_alive", "Processes whose heartbeat is recent, by role.",
                                   labels=["role"])
        for role in ROLES:
            family.add_metric([role], alive.get(role, 0))
        yield family
        holder, _, token = self.s.lease.rpartition(" ")
        leader = GaugeMetricFamily("angora_scheduler_leader", "1 while a scheduler holds the leader lease (its "
                                   "name and fencing token as labels); no sample when none does.",
                                   labels=["holder", "token"])
        if holder:
            leader.add_metric([holder, token], 1)
        yield leader


@bp.get("/metrics")
def metrics() -> Any:
    """Prometheus text format (0.0.4)."""
    ext = current_app.extensions["angora"]
    try:
        jobs = [j.name for j in ext.snapshot().config.jobs]
    except Unavailable:  # no valid definitions loaded yet: every metric but the per-job ones
        jobs = []
    with redis_errors():
        sample = read_sample(ext.r, ext.keys, jobs)
        memory = ext.pressure.memory()
    body = generate_latest(Scrape(sample, ext.settings.backlog, time.time(), memory))  # type: ignore[arg-type]
    return Response(body, mimetype=None, content_type=CONTENT_TYPE_PLAIN_0_0_4)

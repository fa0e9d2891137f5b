-- Record a finished command: its execution, RQ job and registries, the run's job status and count, the job's
-- stats. One command instead of twelve, for the same reason as CREATE.
-- KEYS: exec rq_job run stats inflight rq_started rq_ended work
-- ARGV: ttl id status job ok rq_status ended_iso registry_score started ended duration bucket fields...
-- inflight: the worker's list, or '' (none); rq_ended: RQ's finished or failed registry; work: the deployment's
-- counter of unfinished work (moves with the run's `active`); ok: '1' or '0';
-- bucket: the duration's histogram bound (core/metrics.py): the job's stats count commands per (status, bound)
-- and sum durations per status, for /metrics;
-- fields: the execution's field/value pairs. Returns 1. Not idempotent (counts twice): callers run it once per
-- execution (a worker for what it claimed; the janitor under WATCH of a status still running).
redis.call('HSET', exec, unpack(ARGV, fields))
redis.call('EXPIRE', exec, ttl)
if inflight ~= '' then redis.call('LREM', inflight, 1, id) end
redis.call('HSET', rq_job, RQJOB.status, rq_status, RQJOB.ended_at, ended_iso)
redis.call('EXPIRE', rq_job, ttl)
redis.call('ZREM', rq_started, id .. ':' .. id)
redis.call('ZADD', rq_ended, registry_score, id)
redis.call('HSET', run, RUN.job_status .. job, status)
redis.call('HINCRBY', run, RUN.active, -1)
redis.call('DECR', work)
local succeeded = ok == '1'
redis.call('HSET', stats, JOBSTATS.last_status, succeeded and STATUS.succeeded or STATUS.failed,
           JOBSTATS.last_started, started, JOBSTATS.last_ended, ended, JOBSTATS.last_duration, duration)
redis.call('HINCRBY', stats, JOBSTATS.count .. status .. ':' .. bucket, 1)
redis.call('HINCRBYFLOAT', stats, JOBSTATS.seconds .. status, duration)
return 1

-- Record a finished command: its execution, RQ job and registries, the run's job status and count, the job's
-- stats. One command instead of twelve, for the same reason as CREATE.
-- KEYS: exec rq_job run stats inflight rq_started rq_failed tail work
-- ARGV: id status job ok ended_iso registry_score started ended duration bucket tail_text live fields...
-- inflight: the worker's list, or '' (none); work: the deployment's counter of unfinished work (moves with the
-- run's `active`); ok: '1' or '0'; bucket: the duration's histogram bound (core/metrics.py): the job's stats count
-- commands per (status, bound) and sum durations per status, for /metrics; tail_text: the output's tail when too
-- long for the execution's hash (else ''); live: '1' if the tail key was written while the command ran (it goes
-- unless it holds the final tail); fields: the execution's field/value pairs.
-- A succeeded execution's RQ job is deleted (RQ's own result_ttl=0: rq-dashboard lists what is queued, running or
-- failed, Angora's pages the history); a failed one's stays in RQ's failed registry until the execution is
-- dropped. Returns 1. Not idempotent (counts twice): callers run it once per execution (a worker for what it
-- claimed; the janitor under WATCH of a status still running).
redis.call('HSET', exec, unpack(ARGV, fields))
if tail_text ~= '' then redis.call('SET', tail, tail_text) elseif live == '1' then redis.call('DEL', tail) end
if inflight ~= '' then redis.call('LREM', inflight, 1, id) end
redis.call('ZREM', rq_started, id .. ':' .. id)
local succeeded = ok == '1'
if succeeded then
  redis.call('DEL', rq_job)
else
  redis.call('HSET', rq_job, RQJOB.status, RQSTATUS.failed, RQJOB.ended_at, ended_iso)
  redis.call('ZADD', rq_failed, registry_score, id)
end
redis.call('HSET', run, RUN.job_status .. job, status)
redis.call('HINCRBY', run, RUN.active, -1)
redis.call('DECR', work)
redis.call('HSET', stats, JOBSTATS.last_status, succeeded and STATUS.succeeded or STATUS.failed,
           JOBSTATS.last_started, started, JOBSTATS.last_ended, ended, JOBSTATS.last_duration, duration)
redis.call('HINCRBY', stats, JOBSTATS.count .. status .. ':' .. bucket, 1)
redis.call('HINCRBYFLOAT', stats, JOBSTATS.seconds .. status, duration)
return 1

-- Return a claimed execution unrun (its worker is stopping) to the front of its queue, the attempt not spent; in a
-- run canceled meanwhile it is canceled instead (cancel drops what waits; CLAIM trusts the queues to hold none of a
-- canceled run).
-- KEYS: exec rq_job run inflight rq_started slots rq_queue rq_queues bell tail work rq_canceled
-- ARGV: id job bell_cap now now_iso canceled_expiry
-- slots: the job's concurrency slots, or '' (no limit). Returns 1 if queued again, 0 if canceled.
redis.call('HDEL', exec, EXEC.started, EXEC.worker, EXEC.host, EXEC.tail)
redis.call('DEL', tail)
redis.call('ZREM', rq_started, id .. ':' .. id)
redis.call('LREM', inflight, 1, id)
if slots ~= '' then redis.call('SREM', slots, id) end
if redis.call('HGET', run, RUN.canceled) == '1' then
  redis.call('HSET', exec, EXEC.status, STATUS.canceled, EXEC.ended, now)
  redis.call('HSET', rq_job, RQJOB.status, RQSTATUS.canceled, RQJOB.ended_at, now_iso)
  redis.call('ZADD', rq_canceled, canceled_expiry, id)
  redis.call('HSET', run, RUN.job_status .. job, STATUS.canceled)
  redis.call('HINCRBY', run, RUN.active, -1)
  redis.call('DECR', work)
  return 0
end
redis.call('HSET', exec, EXEC.status, STATUS.queued)
redis.call('HSET', rq_job, RQJOB.status, RQSTATUS.queued)
redis.call('HDEL', rq_job, RQJOB.started_at, RQJOB.worker_name)
redis.call('HSET', run, RUN.job_status .. job, STATUS.queued)
redis.call('LPUSH', rq_queue, id)
redis.call('SADD', rq_queues, rq_queue)
redis.call('RPUSH', bell, 1)
redis.call('LTRIM', bell, 0, tonumber(bell_cap) - 1)
return 1

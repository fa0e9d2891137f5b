-- Return a claimed execution unrun (its worker is stopping) to the front of its queue, the attempt not spent; in a
-- run canceled meanwhile it is canceled instead (cancel drops what waits; CLAIM trusts the queues to hold none of a
-- canceled run).
-- KEYS: exec rq_job run inflight rq_started slots rq_queue rq_queues bell tail work rq_canceled events stream runs outbox accepted unsettled
-- ARGV: id job run_id bell_cap now now_iso canceled_expiry run_prefix outbox_cap events_on
-- include: publish run_end run_count
-- slots: the job's concurrency slots, or '' (no limit); events_on: '' when no event has a listener, else the
-- execution's new status is published (and a canceled run's end). Returns 1 if queued again, 0 if canceled.
local function told(status)
  if events_on ~= '' then
    publish({events, stream, runs, outbox, work, accepted, unsettled},
            {EVENT.execution .. status, now, run_prefix, outbox_cap, run_id, 'status', status, 'job', job,
             'execution_id', id})
    if status == STATUS.canceled then
      run_end({run, events, stream, runs, outbox, work, accepted, unsettled}, {run_id, now, run_prefix, outbox_cap})
    end
  end
end
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
  run_count({run}, {-1, now})
  redis.call('DECR', work)
  told(STATUS.canceled)
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
told(STATUS.queued)
return 1

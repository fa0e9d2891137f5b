-- Free an execution's concurrency slot and let the oldest held execution of its job go to its queue.
-- KEYS: slots held rq_queues events stream runs outbox work accepted unsettled
-- ARGV: id exec_prefix rq_job_prefix rq_queue_prefix run_prefix now outbox_cap events_on
-- include: publish
-- events_on: '' when no event has a listener, else the released execution's angora.execution.queued is published.
-- Returns the id queued, or nil. Not idempotent (a second call lets another one go): finalize runs it once.
redis.call('SREM', slots, id)
local nxt = redis.call('LPOP', held)
if nxt then
  local ek = exec_prefix .. nxt
  local e = redis.call('HMGET', ek, EXEC.queue, EXEC.run, EXEC.job)
  redis.call('HSET', ek, EXEC.status, STATUS.queued)
  redis.call('HSET', rq_job_prefix .. nxt, RQJOB.status, RQSTATUS.queued)
  redis.call('HSET', run_prefix .. e[2], RUN.job_status .. e[3], STATUS.queued)
  redis.call('LPUSH', rq_queue_prefix .. e[1], nxt)
  redis.call('SADD', rq_queues, rq_queue_prefix .. e[1])
  if events_on ~= '' then
    publish({events, stream, runs, outbox, work, accepted, unsettled},
            {EVENT.execution .. STATUS.queued, now, run_prefix, outbox_cap, e[2], 'status', STATUS.queued,
             'job', e[3], 'execution_id', nxt})
  end
end
return nxt

-- Unpause a job: it leaves the paused set and what it held goes, in order, to the end of its RQ queues.
-- KEYS: paused_jobs paused_held rq_queues events stream runs outbox work accepted unsettled
-- ARGV: job exec_prefix rq_job_prefix rq_queue_prefix run_prefix bell_prefix bell_cap now outbox_cap events_on
-- include: publish
-- An execution no longer held (killed while held, or deleted) is dropped. Each queue's bell rings once.
-- events_on: '' when no event has a listener, else each execution queued has its angora.execution.queued.
-- Returns {1 if the job was paused else 0, executions queued}; a second call finds nothing to do.
local was = redis.call('SREM', paused_jobs, job)
local ids = redis.call('LRANGE', paused_held, 0, -1)
redis.call('DEL', paused_held)
local n, rung = 0, {}
for _, id in ipairs(ids) do
  local ek = exec_prefix .. id
  local e = redis.call('HMGET', ek, EXEC.status, EXEC.queue, EXEC.run, EXEC.job)
  if e[1] == STATUS.held then
    redis.call('HSET', ek, EXEC.status, STATUS.queued)
    redis.call('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.queued)
    redis.call('HSET', run_prefix .. e[3], RUN.job_status .. e[4], STATUS.queued)
    redis.call('RPUSH', rq_queue_prefix .. e[2], id)
    redis.call('SADD', rq_queues, rq_queue_prefix .. e[2])
    rung[e[2]] = true
    n = n + 1
    if events_on ~= '' then
      publish({events, stream, runs, outbox, work, accepted, unsettled},
              {EVENT.execution .. STATUS.queued, now, run_prefix, outbox_cap, e[3], 'status', STATUS.queued,
               'job', e[4], 'execution_id', id})
    end
  end
end
for q, _ in pairs(rung) do
  redis.call('RPUSH', bell_prefix .. q, 1)
  redis.call('LTRIM', bell_prefix .. q, 0, tonumber(bell_cap) - 1)
end
return {was, n}

-- Move up to `limit` executions whose replay backoff is over (score <= now, by Redis' clock) into their RQ queues.
-- KEYS: delayed rq_queues events stream runs outbox work accepted unsettled
-- ARGV: limit exec_prefix rq_job_prefix rq_queue_prefix bell_prefix bell_cap run_prefix outbox_cap events_on
-- include: publish
-- Due times are Redis' own (CREATE): the clock of the host that runs this plays no part. A replay goes to the
-- front of its queue (a lost host's executions would otherwise wait behind the whole backlog: measured, 27 s
-- behind 10,000 queued workflows), and each queue given work rings its bell once, so idle workers claim it now.
-- An execution no longer delayed (killed or deleted meanwhile) only leaves the delayed set. Returns how many left it.
-- events_on: '' when no event has a listener, else each execution queued has its angora.execution.queued.
local t = redis.call('TIME')
local now = string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000)
local ids = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(limit))
local rung = {}
for _, id in ipairs(ids) do
  redis.call('ZREM', delayed, id)
  local ek = exec_prefix .. id
  local e = redis.call('HMGET', ek, EXEC.status, EXEC.queue, EXEC.run, EXEC.job)
  if e[1] == STATUS.delayed then
    local q = e[2]
    redis.call('HSET', ek, EXEC.status, STATUS.queued)
    redis.call('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.queued)
    redis.call('LPUSH', rq_queue_prefix .. q, id)  -- at the front: it was taken once, before what waits now
    redis.call('SADD', rq_queues, rq_queue_prefix .. q)
    if not rung[q] then
      rung[q] = true
      redis.call('RPUSH', bell_prefix .. q, 1)
      redis.call('LTRIM', bell_prefix .. q, 0, tonumber(bell_cap) - 1)
    end
    if events_on ~= '' then
      publish({events, stream, runs, outbox, work, accepted, unsettled},
              {EVENT.execution .. STATUS.queued, now, run_prefix, outbox_cap, e[3], 'status', STATUS.queued,
               'job', e[4], 'execution_id', id})
    end
  end
end
return #ids

-- Claim up to `want` queued executions from the worker's queues (in order) into its inflight list, marked running.
-- KEYS: inflight paused_queues work events stream runs outbox accepted unsettled
-- ARGV: want now worker host started_expiry now_iso outbox_cap events_on
-- ARGV: exec_prefix run_prefix rq_job_prefix rq_started_prefix slots_prefix held_prefix rq_queue_prefix
-- ARGV: rq_canceled_prefix canceled_expiry queues...
-- canceled_expiry: the score of an execution dropped into RQ's canceled registry (rq-dashboard lists them there).
-- include: publish run_end
-- *_prefix: a key is the prefix .. an execution id, a job or a queue; started_expiry: the RQ started registry's
-- score; work: the deployment's counter of unfinished work. An id whose execution is no longer queued (killed, canceled or expired while queued) is dropped; one
-- of a canceled run is canceled; one over its job's concurrency limit goes to its held list.
-- events_on: '' when no event has a listener; else each execution's new status is published (and a canceled
-- run's end). Returns, per execution started: id, spec, {run, attempt, topic, params, queue, created}.
local n = tonumber(want)
local out, ids = {}, {}
for qi = queues, #ARGV do
  local q = ARGV[qi]
  if #ids >= n then break end
  if redis.call('SISMEMBER', paused_queues, q) == 0 then
    local qkey = rq_queue_prefix .. q
    while #ids < n do
      local id = redis.call('LPOP', qkey)
      if not id then break end
      local ek = exec_prefix .. id
      -- Everything the worker needs, in one read (the spec too: rarely wasted on a skipped execution).
      local e = redis.call('HMGET', ek, EXEC.status, EXEC.job, EXEC.run, EXEC.limit, EXEC.spec, EXEC.attempt,
                           EXEC.topic, EXEC.params, EXEC.queue, EXEC.created)
      local run = run_prefix .. (e[3] or '')
      local limit = tonumber(e[4] or '0') or 0
      local new = nil
      if e[1] ~= STATUS.queued then
        -- killed, canceled or expired while queued: nothing to run
      elseif redis.call('HGET', run, RUN.canceled) == '1' then
        new = STATUS.canceled
        redis.call('HSET', ek, EXEC.status, STATUS.canceled, EXEC.ended, now)
        redis.call('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.canceled, RQJOB.ended_at, now_iso)
        redis.call('ZADD', rq_canceled_prefix .. q, canceled_expiry, id)
        redis.call('HSET', run, RUN.job_status .. e[2], STATUS.canceled)
        redis.call('HINCRBY', run, RUN.active, -1)
        redis.call('DECR', work)
      elseif limit > 0 and redis.call('SCARD', slots_prefix .. e[2]) >= limit then
        new = STATUS.held
        redis.call('HSET', ek, EXEC.status, STATUS.held)
        redis.call('HSET', run, RUN.job_status .. e[2], STATUS.held)
        redis.call('RPUSH', held_prefix .. e[2], id)
      else
        new = STATUS.running
        if limit > 0 then redis.call('SADD', slots_prefix .. e[2], id) end
        redis.call('HSET', ek, EXEC.status, STATUS.running, EXEC.started, now, EXEC.worker, worker, EXEC.host, host)
        redis.call('HSET', run, RUN.job_status .. e[2], STATUS.running)
        redis.call('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.started, RQJOB.started_at, now_iso,
                   RQJOB.worker_name, worker, RQJOB.last_heartbeat, now_iso)
        redis.call('ZADD', rq_started_prefix .. q, started_expiry, id .. ':' .. id)
        ids[#ids + 1] = id
        out[#out + 1] = id
        out[#out + 1] = e[5]
        out[#out + 1] = {e[3], e[6], e[7], e[8], e[9], e[10]}
      end
      if new and events_on ~= '' then
        local keys = {events, stream, runs, outbox, work, accepted, unsettled}
        publish(keys, {EVENT.execution .. new, now, run_prefix, outbox_cap, e[3], 'status', new, 'job', e[2],
                       'execution_id', id})
        if new == STATUS.canceled then
          run_end({run, events, stream, runs, outbox, work, accepted, unsettled},
                  {e[3], now, run_prefix, outbox_cap})
        end
      end
    end
  end
end
if #ids > 0 then redis.call('RPUSH', inflight, unpack(ids)) end
return out

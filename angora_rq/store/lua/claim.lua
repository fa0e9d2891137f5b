-- Claim up to `want` queued executions from the worker's queues (in order) into its inflight list, marked running.
-- KEYS: inflight paused_queues events stream runs outbox work accepted unsettled
-- ARGV: want now worker host started_expiry now_iso outbox_cap events_on
-- ARGV: exec_prefix run_prefix rq_job_prefix rq_started_prefix slots_prefix held_prefix rq_queue_prefix
-- ARGV: defs_prefix queues...
-- include: publish
-- host: '' when the worker's name says it (host.pid.random: not stored twice).
-- *_prefix: a key is the prefix .. an execution id, a job, a queue or a definitions version; started_expiry: the
-- RQ started registry's score. An id whose execution is no longer queued (killed, canceled or deleted while
-- queued) is dropped; one over its job's concurrency limit goes to its held list. No queue holds an execution of a
-- canceled run: cancel drops them, and CREATE and HAND_BACK cancel what would join one (a read per claim saved).
-- events_on: '' when no event has a listener; else each execution's new status (running, held) is published
-- (events, stream, runs, outbox, work, accepted, unsettled and outbox_cap are PUBLISH's).
-- Returns, per execution started, 11 values in one flat array: id, spec ('' if its definitions version lost it), run,
-- attempt, topic, params, queue, created, config_version, job, follow (the version's Defs.follow record of the job,
-- or ''). Flat because Redis starts a new reply buffer for each nested array, and Redis 6 writes each buffer with a
-- write(2) of its own (bench/README.md, seventh round).
local n = tonumber(want)
local out, ids, specs = {}, {}, {}
for qi = queues, #ARGV do
  local q = ARGV[qi]
  local started = {}  -- RQ's started registry of the queue: one ZADD
  if #ids >= n then break end
  if redis.call('SISMEMBER', paused_queues, q) == 0 then
    local qkey = rq_queue_prefix .. q
    local more = true
    while more and #ids < n do
      local asked = n - #ids
      local popped = redis.call('LPOP', qkey, asked)
      if not popped then break end
      more = #popped == asked  -- fewer: the queue is empty now (no LPOP that answers nil)
      for _, id in ipairs(popped) do
        local ek = exec_prefix .. id
        local e = redis.call('HMGET', ek, EXEC.status, EXEC.job, EXEC.run, EXEC.limit, EXEC.config_version,
                             EXEC.attempt, EXEC.topic, EXEC.params, EXEC.queue, EXEC.created)
        local run = run_prefix .. (e[3] or '')
        local limit = tonumber(e[4] or '0') or 0
        local new = nil
        if e[1] ~= STATUS.queued then
          -- killed, canceled or deleted while queued: nothing to run
        elseif limit > 0 and redis.call('SCARD', slots_prefix .. e[2]) >= limit then
          redis.call('HSET', ek, EXEC.status, STATUS.held)
          redis.call('HSET', run, RUN.job_status .. e[2], STATUS.held)
          redis.call('RPUSH', held_prefix .. e[2], id)
          new = STATUS.held
        else
          if limit > 0 then redis.call('SADD', slots_prefix .. e[2], id) end
          redis.call('HSET', ek, EXEC.status, STATUS.running, EXEC.started, now, EXEC.worker, worker)
          if host ~= '' then redis.call('HSET', ek, EXEC.host, host) end
          redis.call('HSET', run, RUN.job_status .. e[2], STATUS.running)
          redis.call('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.started, RQJOB.started_at, now_iso,
                     RQJOB.worker_name, worker)
          started[#started + 1] = started_expiry
          started[#started + 1] = id .. ':' .. id
          -- Each job's spec (and the topics its worker dispatches itself) is read once per claim and per
          -- definitions version.
          local sk = (e[5] or '') .. ' ' .. e[2]
          if specs[sk] == nil then
            specs[sk] = redis.call('HMGET', defs_prefix .. (e[5] or ''), DEFS.job .. e[2], DEFS.follow .. e[2])
          end
          ids[#ids + 1] = id
          out[#out + 1] = id
          local o = #out
          out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5] = specs[sk][1] or '', e[3], e[6], e[7], e[8] or ''
          out[o + 6], out[o + 7], out[o + 8], out[o + 9], out[o + 10] = e[9], e[10], e[5] or '', e[2], specs[sk][2] or ''
          new = STATUS.running
        end
        if new and events_on ~= '' then
          publish({events, stream, runs, outbox, work, accepted, unsettled},
                  {EVENT.execution .. new, now, run_prefix, outbox_cap, e[3], 'status', new, 'job', e[2],
                   'execution_id', id})
        end
      end
    end
  end
  for i = 1, #started, 1000 do  -- unpack() is limited to a few thousand values
    redis.call('ZADD', rq_started_prefix .. q, unpack(started, i, math.min(i + 999, #started)))
  end
end
for i = 1, #ids, 1000 do redis.call('RPUSH', inflight, unpack(ids, i, math.min(i + 999, #ids))) end
return out

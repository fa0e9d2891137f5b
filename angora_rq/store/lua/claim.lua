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
-- Fails clean: Redis keeps what a script wrote before an error (a key of the wrong type, from corrupted data), so
-- every call here is a redis.pcall and, at the first error, the claim stops: each execution it marked running
-- still goes to `inflight` (the worker finds it there after the error, as after a lost reply), what it popped and
-- had not looked at yet goes back to the head of its queue, and the execution it failed on, if nothing was marked
-- for it, to the tail (tried again after the others: nothing is lost, and nothing runs without an owner). Then the
-- error is returned, naming that execution. (Not a pcall() of a function: a closure over this script's ~40 locals
-- cost an empty claim 43 % more instructions, counted with bench/bench_instructions.py's callgrind.)
local n = tonumber(want)
local out, ids, specs = {}, {}, {}
local q, popped, at, marked, bad = nil, {}, 0, false, nil  -- where the claim is, for the clean-up after an error
local started = {}  -- RQ's started registry of the current queue: one ZADD
local function err_of(reply)  -- a redis.pcall reply's error, or nil
  return type(reply) == 'table' and reply.err or nil
end
for qi = queues, #ARGV do
  if bad or #ids >= n then break end
  q = ARGV[qi]
  local paused = redis.pcall('SISMEMBER', paused_queues, q)
  bad = err_of(paused)
  if paused == 0 then
    local qkey = rq_queue_prefix .. q
    local more = true
    while more and #ids < n and not bad do
      local asked = n - #ids
      local got = redis.pcall('LPOP', qkey, asked)
      bad = err_of(got)
      if bad or not got then break end
      popped, more = got, #got == asked  -- fewer: the queue is empty now (no LPOP that answers nil)
      for k, id in ipairs(popped) do
        at, marked = k, false
        local ek = exec_prefix .. id
        local e = redis.pcall('HMGET', ek, EXEC.status, EXEC.job, EXEC.run, EXEC.limit, EXEC.config_version,
                              EXEC.attempt, EXEC.topic, EXEC.params, EXEC.queue, EXEC.created)
        bad = e.err
        if bad then break end
        local run = run_prefix .. (e[3] or '')
        local limit = tonumber(e[4] or '0') or 0
        local new, full = nil, false
        if e[1] == STATUS.queued and limit > 0 then
          local taken = redis.pcall('SCARD', slots_prefix .. e[2])
          bad = err_of(taken)
          if bad then break end
          full = taken >= limit
        end
        if e[1] ~= STATUS.queued then
          -- killed, canceled or deleted while queued: nothing to run
        elseif full then
          bad = err_of(redis.pcall('RPUSH', held_prefix .. e[2], id))  -- first: from there it is released
          if bad then break end
          marked = true
          bad = err_of(redis.pcall('HSET', ek, EXEC.status, STATUS.held))
                or err_of(redis.pcall('HSET', run, RUN.job_status .. e[2], STATUS.held))
          if bad then break end
          new = STATUS.held
        else
          if limit > 0 then bad = err_of(redis.pcall('SADD', slots_prefix .. e[2], id)) end
          if bad then break end
          bad = err_of(redis.pcall('HSET', ek, EXEC.status, STATUS.running, EXEC.started, now, EXEC.worker, worker))
          if bad then break end
          ids[#ids + 1] = id  -- running under this worker from here: it goes to `inflight` whatever fails next
          started[#started + 1] = started_expiry
          started[#started + 1] = id .. ':' .. id
          marked = true
          if host ~= '' then bad = err_of(redis.pcall('HSET', ek, EXEC.host, host)) end
          bad = bad or err_of(redis.pcall('HSET', run, RUN.job_status .. e[2], STATUS.running))
                or err_of(redis.pcall('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.started, RQJOB.started_at,
                                      now_iso, RQJOB.worker_name, worker))
          if bad then break end
          -- Each job's spec (and the topics its worker dispatches itself) is read once per claim and per
          -- definitions version.
          local sk = (e[5] or '') .. ' ' .. e[2]
          if specs[sk] == nil then
            specs[sk] = redis.pcall('HMGET', defs_prefix .. (e[5] or ''), DEFS.job .. e[2], DEFS.follow .. e[2])
            bad = specs[sk].err
            if bad then break end
          end
          local o = #out
          out[o + 1], out[o + 2], out[o + 3], out[o + 4], out[o + 5], out[o + 6] = id, specs[sk][1] or '', e[3],
                                                                                    e[6], e[7], e[8] or ''
          out[o + 7], out[o + 8], out[o + 9], out[o + 10], out[o + 11] = e[9], e[10], e[5] or '', e[2],
                                                                          specs[sk][2] or ''
          new = STATUS.running
        end
        if new and events_on ~= '' then
          local done, err = pcall(publish, {events, stream, runs, outbox, work, accepted, unsettled},
                                  {EVENT.execution .. new, now, run_prefix, outbox_cap, e[3], 'status', new, 'job',
                                   e[2], 'execution_id', id})
          if not done then bad = type(err) == 'table' and err.err or tostring(err); break end
        end
      end
      if not bad then popped, at = {}, 0 end
    end
  end
  for i = 1, #started, 1000 do  -- unpack() is limited to a few thousand values (written after an error too)
    local err = err_of(redis.pcall('ZADD', rq_started_prefix .. q, unpack(started, i, math.min(i + 999, #started))))
    bad = bad or err
  end
  started = {}
end
for i = 1, #ids, 1000 do redis.call('RPUSH', inflight, unpack(ids, i, math.min(i + 999, #ids))) end
if not bad then return out end
local qkey, failed = rq_queue_prefix .. q, popped[at]
for k = #popped, at + 1, -1 do redis.pcall('LPUSH', qkey, popped[k]) end
if failed and not marked then redis.pcall('RPUSH', qkey, failed) end
-- The error's own text first: callers tell a Redis that refuses work (OOM, MISCONF...) by it (store/connection.py).
return redis.error_reply(tostring(bad) .. ' (CLAIM stopped at execution ' .. tostring(failed or '-') .. ' of queue '
                         .. q .. ')')

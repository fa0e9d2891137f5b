-- A whole matcher batch in one call: for each (message, job) whose guard is free (SET NX, so no WATCH), create
-- the execution and its RQ job as State.create/CREATE do, queue it (or hold it if its job is paused), index it
-- and count it in its run; record the root messages' plans; ring each queue's bell once; XACK every entry, and
-- count in `metrics` the entries still pending it dispatched (root and job messages apart: one HINCRBY per kind
-- per batch; a batch dispatched twice is counted once).
-- Atomic, so a killed matcher either did all of it or nothing (its entries stay pending and are claimed).
-- Values shared by many executions (a job's spec and RQ fields, the batch's time) travel once per batch: the
-- per-argument cost of the client, not Redis, was most of a dispatch.
-- KEYS: stream paused_jobs rq_queues work metrics approvals events runs outbox accepted unsettled
-- ARGV: now now_iso ttl history guard_ttl config_version bell_cap exec_prefix rq_job_prefix group consumer
-- ARGV: run_prefix outbox_cap events_on data_head data_tail n_jobs n_messages n_dispatches batch...
-- include: publish run_end
-- batch: n_jobs jobs, then n_messages messages, then n_dispatches dispatches:
--   job (12 + 2n values): name, queue, spec, limit, stats key, execs key, rq queue key, bell key, paused-held
--     list, gate ('' = none; else an approval gate: its approval_timeout in seconds, or 'inf'), n rq fields,
--     rq field pairs (created_at, enqueued_at, data, description and status are set per execution; data is
--     data_head .. id .. data_tail)
--   message (8): entry, run id, topic, origin, params, run key, run execs key, plan: '' (not a root message),
--     '=' .. JSON (the caller read and merged the run's plan: write it) or '?' .. JSON (write it unless the run
--     already has another plan: then leave it and return the old one for the caller to merge, see SET_PLAN)
--   dispatch (4): message number, job number, execution id, guard key ('' = none)
-- A guard already taken (the pair was dispatched before), an entry no longer pending or a canceled run creates
-- nothing. `work` (the deployment's counter of unfinished work) moves as the runs' `active` counts do, by one INCRBY.
-- events_on: '' when no event has a listener (core/events.py); else each execution created publishes
-- angora.execution.<status> and a run a message left with nothing in flight publishes how it ended.
-- Returns {executions created, then per plan conflict: message number, old plan}. An approval gate's deadline is
-- read from Redis' clock (TIME), not from the matcher's `now`: a host whose clock is off cannot shorten it.
local function due_in(seconds)
  local t = redis.call('TIME')
  return string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(seconds))
end
local keep, cap = tonumber(history), tonumber(bell_cap)
local nj, nm, nd = tonumber(n_jobs), tonumber(n_messages), tonumber(n_dispatches)
local p = batch
local jobs = {}
for j = 1, nj do
  local job = {name = ARGV[p], queue = ARGV[p + 1], spec = ARGV[p + 2], limit = ARGV[p + 3], stats = ARGV[p + 4],
               execs = ARGV[p + 5], qkey = ARGV[p + 6], bell = ARGV[p + 7], held = ARGV[p + 8], gate = ARGV[p + 9],
               rq = {}, at = {}, n = 0, scores = {}}
  local nrq = tonumber(ARGV[p + 10])
  for i = 1, nrq * 2 do job.rq[i] = ARGV[p + 10 + i] end
  for i = 1, nrq * 2, 2 do job.at[job.rq[i]] = i + 1 end
  job.paused = redis.call('SISMEMBER', paused_jobs, job.name) == 1
  jobs[j] = job
  p = p + 11 + nrq * 2
end
local msgs, entries, conflicts, counted = {}, {}, {}, {root = 0, job = 0}
for m = 1, nm do
  msgs[m] = {entry = ARGV[p], run = ARGV[p + 1], topic = ARGV[p + 2], origin = ARGV[p + 3], params = ARGV[p + 4],
             rkey = ARGV[p + 5], rexecs = ARGV[p + 6], plan = ARGV[p + 7], absorbed = false, live = false}
  entries[m] = ARGV[p]
  p = p + 8
end
-- Only entries still pending are dispatched: while this matcher stalled, another may have claimed, dispatched
-- and acknowledged some of them. Their guards would stop a second execution, but not a second count of the
-- message in its run. XCLAIM ... JUSTID returns the ids still pending (and keeps them with this consumer).
local pending = {}
if nm > 0 then
  local claim = {'XCLAIM', stream, group, consumer, 0}
  for m = 1, nm do claim[5 + m] = entries[m] end
  claim[#claim + 1] = 'JUSTID'
  for _, id in ipairs(redis.call(unpack(claim))) do pending[id] = true end
end
for m = 1, nm do
  local msg = msgs[m]
  msg.live = pending[msg.entry] == true
  if msg.live then
    local kind = string.sub(msg.origin, 1, 4) == 'job:' and 'job' or 'root'
    counted[kind] = counted[kind] + 1
  end
  local plan = msg.plan
  if msg.live and plan ~= '' then
    local old = plan:sub(1, 1) == '?' and redis.call('HGET', msg.rkey, RUN.plan)
    plan = plan:sub(2)
    if old and old ~= plan then
      conflicts[#conflicts + 1] = m
      conflicts[#conflicts + 1] = old
    else
      redis.call('HSET', msg.rkey, RUN.plan, plan, RUN.config_version, config_version, RUN.params, msg.params)
    end
  end
end
local canceled, bells, touched, created, queued, queues, moved = {}, {}, {}, 0, {}, {}, 0
for d = 1, nd do
  local msg, job = msgs[tonumber(ARGV[p])], jobs[tonumber(ARGV[p + 1])]
  local id, guard = ARGV[p + 2], ARGV[p + 3]
  p = p + 4
  if msg.live and canceled[msg.rkey] == nil then
    canceled[msg.rkey] = redis.call('HGET', msg.rkey, RUN.canceled) == '1'
  end
  if msg.live and not canceled[msg.rkey] and (guard == '' or redis.call('SET', guard, 1, 'NX', 'EX', guard_ttl)) then
    -- An approval gate waits for a person first (a pause is looked at once it is approved).
    local status = job.gate ~= '' and STATUS.awaiting_approval or job.paused and STATUS.held or STATUS.queued
    local ek = exec_prefix .. id
    redis.call('HSET', ek, EXEC.id, id, EXEC.job, job.name, EXEC.run, msg.run, EXEC.attempt, 1, EXEC.status, status,
               EXEC.queue, job.queue, EXEC.topic, msg.topic, EXEC.entry, msg.entry, EXEC.origin, msg.origin,
               EXEC.params, msg.params, EXEC.spec, job.spec, EXEC.config_version, config_version, EXEC.created, now,
               EXEC.queued, now, EXEC.replay_of, '', EXEC.delay_until, '', EXEC.limit, job.limit)
    redis.call('EXPIRE', ek, ttl)
    local rq, at = job.rq, job.at
    rq[at[RQJOB.created_at]], rq[at[RQJOB.enqueued_at]] = now_iso, now_iso
    rq[at[RQJOB.data]] = data_head .. id .. data_tail
    rq[at[RQJOB.description]] = job.name .. ' (run ' .. msg.run .. ', attempt 1)'
    rq[at[RQJOB.status]] = status == STATUS.queued and RQSTATUS.queued or RQSTATUS.deferred
    redis.call('HSET', rq_job_prefix .. id, unpack(rq))
    redis.call('EXPIRE', rq_job_prefix .. id, ttl)
    if job.gate ~= '' then
      local deadline = job.gate == 'inf' and '' or due_in(job.gate)  -- by Redis' clock, not the matcher's
      redis.call('HSET', ek, EXEC.approval_deadline, deadline)
      redis.call('ZADD', approvals, deadline == '' and '+inf' or deadline, id)
    elseif job.paused then
      redis.call('RPUSH', job.held, id)
    else
      -- Queued at the end, in this order, one RPUSH per queue.
      local q = queued[job.qkey]
      if not q then
        q = {}
        queued[job.qkey] = q
        queues[#queues + 1] = job.qkey
        bells[job.bell] = 0
      end
      q[#q + 1] = id
      bells[job.bell] = bells[job.bell] + 1
    end
    job.scores[#job.scores + 1] = now
    job.scores[#job.scores + 1] = id
    job.n, job.last, job.run = job.n + 1, id, msg.run
    redis.call('ZADD', msg.rexecs, now, id)
    -- The message's first execution takes over its count in the run; every further one adds one.
    if msg.absorbed then
      redis.call('HINCRBY', msg.rkey, RUN.active, 1)
      moved = moved + 1
    end
    msg.absorbed = true
    redis.call('HINCRBY', msg.rkey, RUN.job_count .. job.name, 1)
    redis.call('HSET', msg.rkey, RUN.job_status .. job.name, status, RUN.job_execution .. job.name, id)
    touched[msg.rkey] = msg.rexecs
    created = created + 1
    if events_on ~= '' then
      publish({events, stream, runs, outbox, work, accepted, unsettled},
              {EVENT.execution .. status, now, run_prefix, outbox_cap, msg.run, 'status', status, 'job', job.name,
               'execution_id', id})
    end
  end
end
for m = 1, nm do
  -- A message that started nothing stops counting in its run.
  if msgs[m].live and not msgs[m].absorbed then
    redis.call('HINCRBY', msgs[m].rkey, RUN.active, -1)
    moved = moved - 1
    if events_on ~= '' then
      run_end({msgs[m].rkey, events, stream, runs, outbox, work, accepted, unsettled},
              {msgs[m].run, now, run_prefix, outbox_cap})
    end
  end
end
for rkey, rexecs in pairs(touched) do
  redis.call('EXPIRE', rkey, ttl)
  redis.call('EXPIRE', rexecs, ttl)
end
for _, qkey in ipairs(queues) do
  local ids = queued[qkey]
  for i = 1, #ids, 1000 do  -- unpack() is limited to a few thousand values
    redis.call('RPUSH', qkey, unpack(ids, i, math.min(i + 999, #ids)))
  end
  redis.call('SADD', rq_queues, qkey)
end
for _, job in ipairs(jobs) do
  if job.n > 0 then
    redis.call('ZADD', job.execs, unpack(job.scores))
    redis.call('ZREMRANGEBYRANK', job.execs, 0, -(keep + 1))
    redis.call('HSET', job.stats, JOBSTATS.last_execution, job.last, JOBSTATS.last_run, job.run,
               JOBSTATS.last_status, STATUS.queued)
  end
end
for bell, n in pairs(bells) do
  local ones = {}
  for i = 1, math.min(n, cap) do ones[i] = 1 end
  redis.call('RPUSH', bell, unpack(ones))
  redis.call('LTRIM', bell, 0, cap - 1)
end
if moved ~= 0 then redis.call('INCRBY', work, moved) end
redis.call('XACK', stream, group, unpack(entries))
for kind, n in pairs(counted) do
  if n > 0 then redis.call('HINCRBY', metrics, METRICS.messages .. kind, n) end
end
return {created, unpack(conflicts)}

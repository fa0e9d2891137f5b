-- A whole matcher batch in one call: for each message still pending for this matcher (so dispatched by nobody
-- yet), and each job it triggers (a parent_success join once per run: the run's join field), create the execution
-- and its RQ job as CREATE does, queue it (or hold it if its job is paused), index it and count it in its run;
-- record the root messages' plans; ring each queue's bell once; XACK the entries it handled, and count them in
-- `metrics` (root and job messages apart: one HINCRBY per kind per batch; a batch dispatched twice counts once).
-- `work` (the deployment's counter of unfinished work) moves as the runs' `active` counts do, by one INCRBY.
-- Atomic, so a killed matcher either did all of it or nothing (its entries stay pending and are claimed), and the
-- pending check makes a second dispatch of an entry (claimed from a stalled matcher meanwhile) a no-op.
-- Values shared by many executions (a job's spec and RQ fields, the batch's time) travel once per batch: the
-- per-argument cost of the client, not Redis, was most of a dispatch.
-- KEYS: stream paused_jobs rq_queues defs defs_index work metrics approvals events runs outbox accepted unsettled
-- ARGV: now now_iso history group consumer first last config_version bell_cap exec_prefix rq_job_prefix
-- ARGV: defs_prefix run_prefix outbox_cap events_on direct spare n_jobs n_messages n_dispatches batch...
-- include: publish run_end run_count
-- lib: skip_wrongtype
-- first, last: the lowest and highest entry id of the batch (the range its pending check reads).
-- batch: n_jobs jobs, then n_messages messages, then n_dispatches dispatches:
--   job (12 + 2n values): name, queue, spec ('' when this matcher recorded it less than a minute ago: then its
--     version's use and its queue's place in RQ's set of queues are not written again either), version (its
--     spec's: config_version, or spec_version's own),
--     limit ('' = none), stats key, execs key, rq queue key, bell key, paused-held list, gate ('' = none; else an
--     approval gate: its approval_timeout in seconds, or 'inf'), n rq fields, rq field pairs (created_at,
--     description and status are set per execution)
--   message (8): entry, run id, topic, origin, params ('' = none), run key, plan mode, plan: mode '' (not a root
--     message), '=' (the caller read and merged the run's plan: write it) or '?' (write it unless the run already
--     has another plan: then leave it and return the old one for the caller to merge, see SET_PLAN); plan is
--     the ref and its JSON ('ref json', or 'ref' alone when this matcher recorded it less than a minute ago)
--   dispatch (4): message number, job number, execution id, join ('1' = a parent_success join, else '')
-- defs: the definitions key of config_version (plans are recorded there, specs under their own version).
-- A message no longer pending for `consumer` (dispatched already, or claimed by another matcher) creates nothing.
-- Entries are acknowledged last, after every other write: a script that fails midway (Redis keeps the writes it
-- made before its error) leaves its entries pending, to be tried again and, if they fail alone, put aside as dead
-- letters (dead_letter.lua), never acknowledged without their executions. (A batch of one or two entries once
-- acknowledged each first, XACK's answer its pending check: a command fewer, but a failure after it lost the
-- message.) For the same reason the executions are queued only after their runs and jobs were written: a failure
-- before that queues nothing, so nothing runs twice when the entry is tried again.
-- events_on: '' when no event has a listener (core/events.py); else each execution created publishes
-- angora.execution.<status>, and a run a message left with nothing in flight publishes how it ended.
-- direct: '1' for a worker's direct dispatch of the messages sent by the executions it records (queued in the
-- same MULTI, before FINISH): each message (entry '', mode '') never goes to the stream; it is counted (metrics)
-- and its executions are created as a matcher's would be (pause, cancel, approval gates), with no pending check
-- and nothing to acknowledge. Atomic with the end that sends it, it is dispatched exactly once: if the
-- transaction did not happen, the end is recorded again (fenced) and sends it then.
-- spare: how many executions the caller claims itself right after this call, in the same round trip (a worker's
-- RECORD then its CLAIM, for its own queues; 0 otherwise): when every execution queued here fits in it, no bell
-- rings (a bell would wake another worker for a claim that finds nothing). What it leaves queued, if older
-- executions were ahead, waits for the next claim: workers claim whenever they record and at least every second.
-- direct 'root': one root message the same call accepted first (send_dispatch.lua, in a fresh run SEND just
-- created and counted it in): no stream entry, so no pending check and nothing to acknowledge, and no read of the
-- run (it has no plan and cannot be canceled yet); otherwise as a matcher's: its first execution takes its count
-- over, and a message that creates nothing stops counting (its run may end with it).
-- Returns {executions created, then per plan conflict: message number, old plan JSON; then per write that failed
-- once nothing could stop the call (below): 0, its error}. An approval gate's deadline
-- is read from Redis' clock (TIME), not from the matcher's `now`: a host whose clock is off cannot shorten it.
-- RECORD (record.lua: direct '1', then FINISH in the same call) passes HANDED = true: the runs' fields and counts,
-- and `work`, are then not written here but handed over: it returns {runs = {[run key] = {fields, delta}}, order =
-- the run keys in order, moved = the sum of the deltas} for FINISH to write with its own. A step that dispatches
-- its follow-up and ends would otherwise move its run's count and `work` by +1 then -1, and write its run twice:
-- five commands where one HSET does.
local function due_in(seconds)
  local t = redis.call('TIME')
  return string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(seconds))
end
local keep, cap = tonumber(history), tonumber(bell_cap)
local slack = math.floor(keep / 8) + 8
local nj, nm, nd = tonumber(n_jobs), tonumber(n_messages), tonumber(n_dispatches)
local p = batch
local jobs, versions, announce = {}, {}, {}
for j = 1, nj do
  local job = {name = ARGV[p], queue = ARGV[p + 1], version = ARGV[p + 3], limit = ARGV[p + 4], stats = ARGV[p + 5],
               execs = ARGV[p + 6], qkey = ARGV[p + 7], bell = ARGV[p + 8], held = ARGV[p + 9], gate = ARGV[p + 10],
               rq = {}, at = {}, ids = {}}
  if ARGV[p + 2] ~= '' then
    redis.call('HSETNX', defs_prefix .. job.version, DEFS.job .. job.name, ARGV[p + 2])
    versions[job.version] = true
    announce[job.qkey] = true
  end
  local nrq = tonumber(ARGV[p + 11])
  for i = 1, nrq * 2 do job.rq[i] = ARGV[p + 11 + i] end
  for i = 1, nrq * 2, 2 do job.at[job.rq[i]] = i + 1 end
  job.paused = redis.call('SISMEMBER', paused_jobs, job.name) == 1
  jobs[j] = job
  p = p + 12 + nrq * 2
end
-- The entries still pending for this consumer, in one read of the batch's range (one per entry if the range holds
-- more of this consumer's entries than the read returns).
local pending, room = {}, nm + 100
local got = nm > 0 and direct == '' and redis.call('XPENDING', stream, group, first, last, room, consumer) or {}
for _, e in ipairs(got) do pending[e[1]] = true end
local exact = #got < room
-- Each run is read once (canceled, and its plan for a root message) and written once (one HSET of every field
-- its messages and executions set, one HINCRBY of its count), whatever the batch holds of it.
local msgs, entries, conflicts, counted, states, order = {}, {}, {}, {root = 0, job = 0}, {}, {}
local function run_of(rkey)
  local run = states[rkey]
  if not run then
    local h = direct == 'root' and {} or redis.call('HMGET', rkey, RUN.canceled, RUN.plan, RUN.config_version)
    run = {canceled = h[1] == '1', plan = h[2], version = h[3], fields = {}, delta = 0}
    states[rkey] = run
    order[#order + 1] = rkey
  end
  return run
end
local function put(run, ...)
  for _, v in ipairs({...}) do run.fields[#run.fields + 1] = v end
end
for m = 1, nm do
  local msg = {entry = ARGV[p], run = ARGV[p + 1], topic = ARGV[p + 2], origin = ARGV[p + 3], params = ARGV[p + 4],
               rkey = ARGV[p + 5], absorbed = false}
  msg.live = direct ~= '' or pending[msg.entry] == true
  if not msg.live and not exact then
    msg.live = #redis.call('XPENDING', stream, group, msg.entry, msg.entry, 1, consumer) > 0
  end
  msgs[m] = msg
  local mode, plan = ARGV[p + 6], ARGV[p + 7]
  if msg.live then
    if direct == '' then entries[#entries + 1] = msg.entry end
    local kind = string.sub(msg.origin, 1, 4) == 'job:' and 'job' or 'root'
    counted[kind] = counted[kind] + 1
    local run = run_of(msg.rkey)
    msg.state = run
    -- A worker's direct message counts in its run (as a sent one does) until its first execution takes it over.
    if direct == '1' then run.delta = run.delta + 1 end
    if mode ~= '' then
      local sp = plan:find(' ', 1, true)
      local ref = sp and plan:sub(1, sp - 1) or plan
      if sp then
        redis.call('HSETNX', defs, DEFS.plan .. ref, plan:sub(sp + 1))
        versions[config_version] = true
      end
      if mode == '?' and run.plan and run.plan ~= ref then
        conflicts[#conflicts + 1] = m
        conflicts[#conflicts + 1] = redis.call('HGET', defs_prefix .. (run.version or ''), DEFS.plan .. run.plan) or ''
      else
        run.plan, run.version = ref, config_version
        put(run, RUN.plan, ref, RUN.config_version, config_version)
        if msg.params ~= '' then put(run, RUN.params, msg.params) end
      end
    end
  end
  p = p + 8
end
local bells, created, queued, queues, moved, parked = {}, 0, {}, {}, 0, {}
for d = 1, nd do
  local msg, job = msgs[tonumber(ARGV[p])], jobs[tonumber(ARGV[p + 1])]
  local id, join = ARGV[p + 2], ARGV[p + 3]
  p = p + 4
  if msg.live and not msg.state.canceled
      and (join == '' or redis.call('HSETNX', msg.rkey, RUN.join .. job.name, 1) == 1) then
    -- An approval gate waits for a person first (a pause is looked at once it is approved).
    local status = job.gate ~= '' and STATUS.awaiting_approval or job.paused and STATUS.held or STATUS.queued
    local f = {EXEC.job, job.name, EXEC.run, msg.run, EXEC.attempt, 1, EXEC.status, status, EXEC.queue, job.queue,
               EXEC.topic, msg.topic, EXEC.origin, msg.origin, EXEC.config_version, job.version, EXEC.created, now}
    if msg.params ~= '' then f[#f + 1] = EXEC.params; f[#f + 1] = msg.params end
    if job.limit ~= '' then f[#f + 1] = EXEC.limit; f[#f + 1] = job.limit end
    local deadline = job.gate ~= '' and job.gate ~= 'inf' and due_in(job.gate) or ''  -- Redis' clock
    if deadline ~= '' then f[#f + 1] = EXEC.approval_deadline; f[#f + 1] = deadline end
    redis.call('HSET', exec_prefix .. id, unpack(f))
    local rq, at = job.rq, job.at
    rq[at[RQJOB.created_at]] = now_iso
    rq[at[RQJOB.description]] = string.sub(job.name .. ' (run ' .. msg.run .. ', attempt 1)', 1, 64)
    rq[at[RQJOB.status]] = status == STATUS.queued and RQSTATUS.queued or RQSTATUS.deferred
    redis.call('HSET', rq_job_prefix .. id, unpack(rq))
    if job.gate ~= '' then
      parked[#parked + 1] = {'ZADD', approvals, deadline == '' and '+inf' or deadline, id}
    elseif job.paused then
      parked[#parked + 1] = {'RPUSH', job.held, id}
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
    job.ids[#job.ids + 1] = id
    job.last, job.run = id, msg.run
    -- The message's first execution takes over its count in the run; every further one adds one.
    if msg.absorbed then msg.state.delta = msg.state.delta + 1 end
    msg.absorbed = true
    put(msg.state, RUN.job_status .. job.name, status, RUN.job_execution .. job.name, id, RUN.execution .. id,
        job.name)
    created = created + 1
    if events_on ~= '' then
      publish({events, stream, runs, outbox, work, accepted, unsettled},
              {EVENT.execution .. status, now, run_prefix, outbox_cap, msg.run, 'status', status, 'job', job.name,
               'execution_id', id})
    end
  end
end
for m = 1, nm do
  -- A message that started nothing stops counting in its run (which may have ended with it).
  if msgs[m].live and not msgs[m].absorbed then
    msgs[m].state.delta = msgs[m].state.delta - 1
    -- (a direct dispatch's run is still counting the execution that sent it: FINISH, next, looks at its end)
    if direct ~= '1' then msgs[m].state.id = msgs[m].run end
  end
end
for _, job in ipairs(jobs) do
  if #job.ids > 0 then
    local len = 0
    for i = 1, #job.ids, 1000 do
      len = redis.call('LPUSH', job.execs, unpack(job.ids, i, math.min(i + 999, #job.ids)))
    end
    -- Trimmed once it holds an eighth more than `keep` (readers take the first `keep`: store/queries.py), not at
    -- each batch.
    if len > keep + slack then redis.call('LTRIM', job.execs, 0, keep - 1) end
    redis.call('HSET', job.stats, JOBSTATS.last_execution, job.last, JOBSTATS.last_run, job.run,
               JOBSTATS.last_status, STATUS.queued)
  end
end
for v, _ in pairs(versions) do redis.call('ZADD', defs_index, now, v) end
for kind, n in pairs(counted) do
  if n > 0 then redis.call('HINCRBY', metrics, METRICS.messages .. kind, n) end
end
-- What cannot be undone comes last: the runs' counts, the queues and the held and gated lists (from them the
-- executions run), the acknowledgement. From the first of these writes on nothing may stop the call (a batch that
-- failed after queueing would be dispatched again, and queue twice): each goes through lib/skip_wrongtype.lua (an
-- included call a pcall), one that fails on a key of the wrong type (corrupted data) is skipped and noted, and the
-- rest is written.
for _, rkey in ipairs(order) do
  local run = states[rkey]
  if not HANDED then
    for i = 1, #run.fields, 1000 do  -- unpack() is limited to a few thousand values (a fan-out into one run)
      w('HSET', rkey, unpack(run.fields, i, math.min(i + 999, #run.fields)))
    end
    if run.delta ~= 0 then
      local done, err = pcall(run_count, {rkey}, {run.delta, now})
      if not done then note(err) end
    end
  end
  moved = moved + run.delta
end
if moved ~= 0 and not HANDED then w('INCRBY', work, moved) end  -- before an event's message counts in it
if events_on ~= '' then
  for _, rkey in ipairs(order) do
    if states[rkey].id then
      local done, err = pcall(run_end, {rkey, events, stream, runs, outbox, work, accepted, unsettled},
                              {states[rkey].id, now, run_prefix, outbox_cap})
      if not done then note(err) end
    end
  end
end
for _, c in ipairs(parked) do w(unpack(c)) end
for _, qkey in ipairs(queues) do
  local ids = queued[qkey]
  for i = 1, #ids, 1000 do  -- unpack() is limited to a few thousand values
    w('RPUSH', qkey, unpack(ids, i, math.min(i + 999, #ids)))
  end
  if announce[qkey] then w('SADD', rq_queues, qkey) end
end
local total = 0
for _, n in pairs(bells) do total = total + n end
if total <= tonumber(spare) then bells = {} end
for bell, n in pairs(bells) do
  local ones = {}
  for i = 1, math.min(n, cap) do ones[i] = 1 end
  -- Trimmed once twice over its cap, not at each batch of a busy queue: the extra ones only wake idle workers.
  local len = w('RPUSH', bell, unpack(ones))
  if type(len) == 'number' and len > 2 * cap then w('LTRIM', bell, 0, cap - 1) end
end
if #entries > 0 then w('XACK', stream, group, unpack(entries)) end
if #wrongtype > 0 then
  redis.log(redis.LOG_WARNING, 'angora DISPATCH: not written: ' .. table.concat(wrongtype, '; '))
end
if HANDED then return {runs = states, order = order, moved = moved, notes = wrongtype} end
-- (each note as a pair whose message number is 0: store/dispatch.py tells them from the plan conflicts)
for _, text in ipairs(wrongtype) do
  conflicts[#conflicts + 1] = 0
  conflicts[#conflicts + 1] = text
end
return {created, unpack(conflicts)}

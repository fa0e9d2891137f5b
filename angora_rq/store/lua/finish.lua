-- Record a batch of finished commands (a worker's, or one): each execution, its RQ job and registries, its run's
-- job status and count; then, once per batch, the work counter, RQ's started registry per queue, the succeeded
-- executions' RQ jobs, and per job its statistics. One command instead of twelve per execution.
-- KEYS: work inflight events stream runs outbox accepted unsettled rq_worker
-- ARGV: now ended_iso registry_score exec_prefix rq_job_prefix run_prefix stats_prefix tail_prefix rq_started_prefix
-- ARGV: rq_failed_prefix outbox_cap events_on guard rows...
-- include: publish run_end run_count leave_inflight
-- lib: skip_wrongtype
-- inflight: the worker's list, or '' (none); guard: '1' when the call stands alone (a worker's batch with nothing
-- else to write): each execution must still be in `inflight` (leave_inflight.lua), else nothing is written and
-- the call returns -1 (the caller records each end fenced, store/fence.py): taking them out of the list, which the
-- call does anyway, is the check; rq_worker: RQ's hash of the worker whose counters of finished and failed jobs
-- and working time move with the batch ('' = none); work: the deployment's counter of unfinished work (moves with
-- the runs' `active`); a key is a *_prefix .. an execution id, a run id, a job or a queue. rows: per execution id, run, job,
-- queue, status, ok ('1' or '0'), started, ended, duration, bucket (the duration's histogram bound, core/metrics.py:
-- the job's stats count commands per (status, bound) and sum durations per status, for /metrics), tail_text (the
-- output's tail when too long for the execution's hash, else ''), live ('1' if the tail key was written while the
-- command ran: it goes unless it holds the final tail), n (field/value pairs), then the execution's n field/value
-- pairs. A succeeded execution's RQ job is deleted (RQ's own result_ttl=0: rq-dashboard lists what is queued,
-- running or failed, Angora's pages the history); a failed one's stays in RQ's failed registry until the execution
-- is dropped. Returns the number of executions recorded. Not idempotent (counts twice): callers run it once per
-- execution (a worker for what it claimed; the janitor under WATCH of a status still running).
-- Fails clean: Redis keeps what a script wrote before an error, so past the guard each write goes through
-- lib/skip_wrongtype.lua (each included call a pcall): one that fails on a key of the wrong type (corrupted data) is
-- skipped, the rest written all the same, and the reply is then {count, error...} (store/state.py finish_reply); a
-- Redis refusing writes fails the call as before, at its first write. A failure midway used
-- to end an execution and stop there: its run's count, `work` and the batch's other ends unwritten, the run active
-- for ever, and the messages queued before FINISH in the caller's transaction sent again by a retry.
-- Callers queue FINISH after the messages and replays the batch sends (they count in their run first). events_on:
-- '' when no event has a listener (core/events.py); else each execution's final status is published, then how
-- each of the batch's runs ended if it has.
-- Each run is written once, after the rows: its count moved by its rows' sum, its fields in one HSET. RECORD
-- passes as HANDED what its DISPATCH, just before, left unwritten (dispatch.lua): those runs' fields and counts, and
-- `work`'s move, join this call's, so a step that ends and starts its follow-up in the same run writes the run with
-- one HSET, and moves neither its count nor `work`.
for _, text in ipairs(HANDED and HANDED.notes or {}) do wrongtype[#wrongtype + 1] = text end  -- RECORD's DISPATCH's
local started, dropped, jobs, order, ended, seen = {}, {}, {}, {}, {}, {}
local counts, run_order = {}, {}  -- run key -> {fields, delta}; the keys in order
local function count(rk, ...)
  local c = counts[rk]
  if not c then
    c = {fields = {}, delta = 0}
    counts[rk] = c
    run_order[#run_order + 1] = rk
  end
  c.delta = c.delta - 1
  for _, v in ipairs({...}) do c.fields[#c.fields + 1] = v end
end
if HANDED then  -- written first, as DISPATCH would have: a field set again below takes this call's value
  for _, rk in ipairs(HANDED.order) do
    counts[rk] = HANDED.runs[rk]
    run_order[#run_order + 1] = rk
  end
end
local n, p = 0, rows
-- The batch leaves the worker's inflight list (with `guard`, all of it or nothing).
if inflight ~= '' then
  local ids = {}
  while p <= #ARGV do
    ids[#ids + 1] = ARGV[p]
    p = p + 13 + tonumber(ARGV[p + 12]) * 2
  end
  p = rows
  if leave_inflight({inflight}, {guard, unpack(ids)}) == 0 then return -1 end
end
local ok_count, working = 0, 0
while p <= #ARGV do
  local id, run, job, queue, status, ok = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3], ARGV[p + 4], ARGV[p + 5]
  local t0, t1, duration, bucket, tail_text, live = ARGV[p + 6], ARGV[p + 7], ARGV[p + 8], ARGV[p + 9],
                                                    ARGV[p + 10], ARGV[p + 11]
  local nf = tonumber(ARGV[p + 12])
  local ek = exec_prefix .. id
  w('HSET', ek, unpack(ARGV, p + 13, p + 12 + nf * 2))
  p = p + 13 + nf * 2
  if tail_text ~= '' then
    w('SET', tail_prefix .. id, tail_text)
  elseif live == '1' then
    w('DEL', tail_prefix .. id)
  end
  started[queue] = started[queue] or {}
  table.insert(started[queue], id .. ':' .. id)
  if ok == '1' then
    dropped[#dropped + 1] = rq_job_prefix .. id
  else
    w('HSET', rq_job_prefix .. id, RQJOB.status, RQSTATUS.failed, RQJOB.ended_at, ended_iso)
    w('ZADD', rq_failed_prefix .. queue, registry_score, id)
  end
  local rk = run_prefix .. run
  -- The run's end time once nothing is left in flight, and the job's status in it. A replaying one's job status is
  -- its replay's: CREATE, queued before FINISH, wrote it (replaying, or canceled in a run canceled while this
  -- attempt ran).
  if status ~= STATUS.replaying then
    count(rk, RUN.job_status .. job, status)
  else
    count(rk)
  end
  if events_on ~= '' then
    local done, err = pcall(publish, {events, stream, runs, outbox, work, accepted, unsettled},
                            {EVENT.execution .. status, now, run_prefix, outbox_cap, run, 'status', status, 'job',
                             job, 'execution_id', id})
    if not done then note(err) end
    if not seen[run] then
      seen[run] = true
      ended[#ended + 1] = run
    end
  end
  local s = jobs[job]
  if not s then
    s = {counts = {}, seconds = {}}
    jobs[job] = s
    order[#order + 1] = job
  end
  if ok == '1' then ok_count = ok_count + 1 end
  working = working + tonumber(duration)
  s.last = {ok == '1' and STATUS.succeeded or STATUS.failed, t0, t1, duration}
  local c = JOBSTATS.count .. status .. ':' .. bucket
  s.counts[c] = (s.counts[c] or 0) + 1
  local d = JOBSTATS.seconds .. status
  s.seconds[d] = (s.seconds[d] or 0) + tonumber(duration)
  n = n + 1
end
for queue, members in pairs(started) do
  for i = 1, #members, 1000 do  -- unpack() is limited to a few thousand values
    w('ZREM', rq_started_prefix .. queue, unpack(members, i, math.min(i + 999, #members)))
  end
end
for i = 1, #dropped, 1000 do w('DEL', unpack(dropped, i, math.min(i + 999, #dropped))) end
for _, rk in ipairs(run_order) do
  local c = counts[rk]
  local f = c.fields
  if #f > 1000 then  -- unpack() is limited to a few thousand values: the fields go first, in parts
    for i = 1, #f, 1000 do w('HSET', rk, unpack(f, i, math.min(i + 999, #f))) end
    f = {}
  end
  if c.delta ~= 0 then
    local done, err = pcall(run_count, {rk}, {c.delta, now, unpack(f)})
    if not done then note(err) end
  elseif #f > 0 then
    w('HSET', rk, unpack(f))
  end
end
local moved = (HANDED and HANDED.moved or 0) - n
if moved ~= 0 then w('INCRBY', work, moved) end
for _, run in ipairs(ended) do
  local done, err = pcall(run_end, {run_prefix .. run, events, stream, runs, outbox, work, accepted, unsettled},
                          {run, now, run_prefix, outbox_cap})
  if not done then note(err) end
end
for _, job in ipairs(order) do
  local s, sk = jobs[job], stats_prefix .. job
  w('HSET', sk, JOBSTATS.last_status, s.last[1], JOBSTATS.last_started, s.last[2],
    JOBSTATS.last_ended, s.last[3], JOBSTATS.last_duration, s.last[4])
  for field, k in pairs(s.counts) do w('HINCRBY', sk, field, k) end
  for field, sum in pairs(s.seconds) do w('HINCRBYFLOAT', sk, field, string.format('%.6f', sum)) end
end
if rq_worker ~= '' and n > 0 then
  if ok_count > 0 then w('HINCRBY', rq_worker, RQWORKER.successful_job_count, ok_count) end
  if n > ok_count then w('HINCRBY', rq_worker, RQWORKER.failed_job_count, n - ok_count) end
  w('HINCRBYFLOAT', rq_worker, RQWORKER.total_working_time, string.format('%.6f', working))
end
if #wrongtype > 0 then return {n, unpack(wrongtype)} end
return n

-- Create one execution and its RQ job, queue it (or delay it, or leave it held), index it and count it in its
-- run: the writes of State.create in one command (replays, retries, manual runs; matcher batches use DISPATCH).
-- KEYS: exec rq_job run job_execs stats rq_queue bell delayed rq_queues defs defs_index work approvals
-- ARGV: history now id job run_id status delay approval_timeout bell_cap spec version n_exec fields...
-- include: run_count
-- fields: the execution's n_exec field/value pairs, then the RQ job's; spec: the job's JSON, recorded under its
-- definitions version unless there already; work: the deployment's counter of unfinished work (moves with the
-- run's `active`). Returns 1. delay: seconds a delayed execution waits, from now by Redis' clock (TIME): a host
-- whose clock is off cannot make a replay due early; approval_timeout likewise ('' = never).
-- A delayed execution is a replay: the run's job status becomes replaying (its failed attempt waits for it). In a
-- canceled run any execution is created canceled instead and nothing waits. One awaiting approval joins the
-- approvals set, scored by when its approval_timeout passes (its approval_deadline), or '+inf'.
local function due_in(seconds)
  local t = redis.call('TIME')
  return string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(seconds))
end
local rq_fields = fields + tonumber(n_exec) * 2
redis.call('HSETNX', defs, DEFS.job .. job, spec)
redis.call('ZADD', defs_index, now, version)
redis.call('HSET', exec, unpack(ARGV, fields, rq_fields - 1))
redis.call('HSET', rq_job, unpack(ARGV, rq_fields))
local job_status = status == STATUS.delayed and STATUS.replaying or status  -- a replay: its attempt is replaying
if status ~= STATUS.canceled and redis.call('HGET', run, RUN.canceled) == '1' then
  -- A replay in a run canceled while its attempt ran, or any execution created in a canceled run: recorded
  -- canceled, never queued (the run ends now; CLAIM trusts the queues to hold nothing of a canceled run).
  status, job_status = STATUS.canceled, STATUS.canceled
  redis.call('HSET', exec, EXEC.status, STATUS.canceled, EXEC.ended, now)
  redis.call('HSET', rq_job, RQJOB.status, RQSTATUS.canceled)
end
if status == STATUS.queued then
  redis.call('RPUSH', rq_queue, id)
  redis.call('SADD', rq_queues, rq_queue)
  redis.call('RPUSH', bell, 1)
  redis.call('LTRIM', bell, 0, tonumber(bell_cap) - 1)
elseif status == STATUS.delayed then
  local due = due_in(delay)
  redis.call('HSET', exec, EXEC.delay_until, due)
  redis.call('ZADD', delayed, due, id)
elseif status == STATUS.awaiting_approval then
  if approval_timeout == '' then
    redis.call('ZADD', approvals, '+inf', id)  -- no deadline: the field stays absent
  else
    local deadline = due_in(approval_timeout)
    redis.call('HSET', exec, EXEC.approval_deadline, deadline)
    redis.call('ZADD', approvals, deadline, id)
  end
end
redis.call('LPUSH', job_execs, id)
redis.call('LTRIM', job_execs, 0, tonumber(history) - 1)
redis.call('HSET', stats, JOBSTATS.last_execution, id, JOBSTATS.last_run, run_id, JOBSTATS.last_status, STATUS.queued)
if status ~= STATUS.canceled then
  run_count({run}, {1, now})  -- a run that had ended is running again: its end time goes
  redis.call('INCR', work)
end
redis.call('HSET', run, RUN.job_status .. job, job_status, RUN.job_execution .. job, id, RUN.execution .. id, job)
return 1

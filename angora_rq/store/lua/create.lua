-- Create one execution and its RQ job, queue it (or delay it, or leave it held), index it and count it in its
-- run: the writes of State.create in one command (replays, retries, manual runs; matcher batches use DISPATCH).
-- KEYS: exec rq_job run job_execs run_execs stats rq_queue bell delayed rq_queues work approvals
-- ARGV: ttl history now id job run_id status delay approval_timeout bell_cap n_exec fields...
-- fields: the execution's n_exec field/value pairs, then the RQ job's; work: the deployment's counter of unfinished
-- work (moves with the run's `active`). Returns 1. delay: seconds a delayed execution waits, from now by Redis'
-- clock (TIME): a host whose clock is off cannot make a replay due early; approval_timeout likewise ('' = never).
-- A delayed execution is a replay: the run's job status becomes replaying (its failed attempt waits for it), or,
-- in a run canceled meanwhile, the execution is created canceled instead and nothing waits. One awaiting approval
-- joins the approvals set, scored by when its approval_timeout passes (its approval_deadline), or '+inf'.
local function due_in(seconds)
  local t = redis.call('TIME')
  return string.format('%.6f', tonumber(t[1]) + tonumber(t[2]) / 1000000 + tonumber(seconds))
end
local rq_fields = fields + tonumber(n_exec) * 2
redis.call('HSET', exec, unpack(ARGV, fields, rq_fields - 1))
redis.call('EXPIRE', exec, ttl)
redis.call('HSET', rq_job, unpack(ARGV, rq_fields))
redis.call('EXPIRE', rq_job, ttl)
local job_status = status == STATUS.delayed and STATUS.replaying or status  -- a replay: its attempt is replaying
if status == STATUS.delayed and redis.call('HGET', run, RUN.canceled) == '1' then
  -- A replay in a run canceled while its attempt ran: recorded canceled, never due (the run ends now).
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
  local deadline = approval_timeout == '' and '' or due_in(approval_timeout)
  redis.call('HSET', exec, EXEC.approval_deadline, deadline)
  redis.call('ZADD', approvals, deadline == '' and '+inf' or deadline, id)
end
redis.call('ZADD', job_execs, now, id)
redis.call('ZREMRANGEBYRANK', job_execs, 0, -(tonumber(history) + 1))
redis.call('ZADD', run_execs, now, id)
redis.call('EXPIRE', run_execs, ttl)
redis.call('HSET', stats, JOBSTATS.last_execution, id, JOBSTATS.last_run, run_id, JOBSTATS.last_status, STATUS.queued)
if status ~= STATUS.canceled then
  redis.call('HINCRBY', run, RUN.active, 1)
  redis.call('INCR', work)
end
redis.call('HINCRBY', run, RUN.job_count .. job, 1)
redis.call('HSET', run, RUN.job_status .. job, job_status, RUN.job_execution .. job, id)
redis.call('EXPIRE', run, ttl)
return 1

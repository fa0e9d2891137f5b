-- Approve or reject an execution awaiting approval, recording who and when. Approved, it is queued (or held, if
-- its job is paused now); rejected, it ends `rejected` and stops counting in its run.
-- KEYS: exec rq_job run approvals stats paused_jobs paused_held rq_queue rq_queues bell work
-- ARGV: id job decision by now bell_cap
-- include: run_count
-- decision: 'approved' or 'rejected'; work: the deployment's counter of unfinished work (moves with `active`).
-- Returns {1, new status}, or {0, status} when it was not awaiting approval
-- (nothing changes: a decision is taken once).
local status = redis.call('HGET', exec, EXEC.status)
if status ~= STATUS.awaiting_approval then return {0, status or ''} end
redis.call('ZREM', approvals, id)
redis.call('HSET', exec, EXEC.approval, decision, EXEC.decided_by, by, EXEC.decided_at, now)
local new
if decision == 'rejected' then
  new = STATUS.rejected
  redis.call('HSET', exec, EXEC.status, new, EXEC.ended, now)
  redis.call('HSET', rq_job, RQJOB.status, RQSTATUS.canceled)
  run_count({run}, {-1, now})
  redis.call('DECR', work)
  redis.call('HSET', stats, JOBSTATS.last_status, new)
elseif redis.call('SISMEMBER', paused_jobs, job) == 1 then
  new = STATUS.held
  redis.call('HSET', exec, EXEC.status, new)
  redis.call('RPUSH', paused_held, id)
else
  new = STATUS.queued
  redis.call('HSET', exec, EXEC.status, new)
  redis.call('HSET', rq_job, RQJOB.status, RQSTATUS.queued)
  redis.call('RPUSH', rq_queue, id)
  redis.call('SADD', rq_queues, rq_queue)
  redis.call('RPUSH', bell, 1)
  redis.call('LTRIM', bell, 0, tonumber(bell_cap) - 1)
end
-- The run shows the job's latest execution: only when it is this one does the decision change the job's status.
if redis.call('HGET', run, RUN.job_execution .. job) == id then redis.call('HSET', run, RUN.job_status .. job, new) end
return {1, new}

-- Drop finished runs with everything of theirs: each run's executions, their RQ jobs (and failed-registry entries)
-- and output tails, its places in the run indexes, then the run itself and its place in the runs index. A run
-- still active (a message in flight, an execution not finished) is never touched: it stays, in its place.
-- KEYS: runs unsettled succeeded failed canceled
-- ARGV: run_prefix exec_prefix rq_job_prefix tail_prefix rq_failed_prefix by_job_prefix run_ids...
-- succeeded, failed, canceled: the finished-run indexes; by_job_prefix .. a job: the runs a job took part in.
-- Returns {runs dropped, executions dropped, runs kept (active)}.
local dropped, execs, kept = 0, 0, 0
local xp, sp = RUN.execution, RUN.job_status
for i = run_ids, #ARGV do
  local id = ARGV[i]
  local key = run_prefix .. id
  local active = tonumber(redis.call('HGET', key, RUN.active) or '0') or 0
  if active > 0 then
    kept = kept + 1
  else
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if f:sub(1, #xp) == xp then
        local xid = f:sub(#xp + 1)
        local q = redis.call('HGET', exec_prefix .. xid, EXEC.queue)
        if redis.call('DEL', rq_job_prefix .. xid) == 1 and q then
          redis.call('ZREM', rq_failed_prefix .. q, xid)
        end
        redis.call('DEL', exec_prefix .. xid, tail_prefix .. xid)
        execs = execs + 1
      elseif f:sub(1, #sp) == sp then
        redis.call('ZREM', by_job_prefix .. f:sub(#sp + 1), id)
      end
    end
    redis.call('DEL', key)
    redis.call('ZREM', runs, id)
    redis.call('HDEL', unsettled, id)
    redis.call('ZREM', succeeded, id)
    redis.call('ZREM', failed, id)
    redis.call('ZREM', canceled, id)
    dropped = dropped + 1
  end
end
return {dropped, execs, kept}

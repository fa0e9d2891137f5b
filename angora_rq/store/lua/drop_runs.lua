-- Drop finished runs with everything of theirs: each run's executions, their RQ jobs (and failed-registry entries)
-- and output tails, then the run itself and its place in the runs index. A run still active (a message in flight,
-- an execution not finished) is never touched: it stays, in its place.
-- KEYS: runs
-- ARGV: run_prefix exec_prefix rq_job_prefix tail_prefix rq_failed_prefix run_ids...
-- Returns {runs dropped, executions dropped, runs kept (active)}.
local dropped, execs, kept = 0, 0, 0
for i = run_ids, #ARGV do
  local id = ARGV[i]
  local key = run_prefix .. id
  local active = tonumber(redis.call('HGET', key, RUN.active) or '0') or 0
  if active > 0 then
    kept = kept + 1
  else
    local fields = redis.call('HKEYS', key)
    local xp = RUN.execution
    for _, f in ipairs(fields) do
      if f:sub(1, #xp) == xp then
        local xid = f:sub(#xp + 1)
        local q = redis.call('HGET', exec_prefix .. xid, EXEC.queue)
        if redis.call('DEL', rq_job_prefix .. xid) == 1 and q then
          redis.call('ZREM', rq_failed_prefix .. q, xid)
        end
        redis.call('DEL', exec_prefix .. xid, tail_prefix .. xid)
        execs = execs + 1
      end
    end
    redis.call('DEL', key)
    redis.call('ZREM', runs, id)
    dropped = dropped + 1
  end
end
return {dropped, execs, kept}

-- Guard a worker's usual transaction of records: sent after WATCH guard <each execution's key> and before MULTI,
-- it touches `guard` when an execution is no longer `running` under `worker` (a janitor took the worker for lost
-- and replayed it, someone recorded or handed it back): the WATCH then aborts the transaction (EXEC answers nil)
-- and the worker writes those ends one by one, fenced. A change to an execution after the WATCH aborts it too.
-- KEYS: guard
-- ARGV: worker exec_prefix ids...
-- Returns 1 when every execution is still the worker's, else 0 (the guard touched).
for i = ids, #ARGV do
  local e = redis.call('HMGET', exec_prefix .. ARGV[i], EXEC.status, EXEC.worker)
  if e[1] ~= STATUS.running or e[2] ~= worker then
    redis.call('SET', guard, 1, 'PX', 1000)
    return 0
  end
end
return 1

-- Take the inflight executions of a worker whose heartbeat expired, once, into the orphans list.
-- KEYS: alive inflight orphans workers
-- ARGV: worker
-- Returns -1 if the worker is alive (nothing done), else how many executions were moved.
if redis.call('EXISTS', alive) == 1 then return -1 end
local ids = redis.call('LRANGE', inflight, 0, -1)
for _, id in ipairs(ids) do redis.call('RPUSH', orphans, id) end
redis.call('DEL', inflight)
redis.call('SREM', workers, worker)
return #ids

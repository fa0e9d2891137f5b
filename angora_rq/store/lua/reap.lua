-- Take the inflight executions of a worker whose heartbeat expired, once, into the orphans list, and drop its
-- control list (requests it will never read: kills of executions now orphaned, its own waker's pokes).
-- KEYS: alive inflight orphans workers control
-- ARGV: worker
-- Returns -1 if the worker is alive (nothing done), else how many executions were moved.
if redis.call('EXISTS', alive) == 1 then return -1 end
local ids = redis.call('LRANGE', inflight, 0, -1)
for _, id in ipairs(ids) do redis.call('RPUSH', orphans, id) end
redis.call('DEL', inflight, control)
redis.call('SREM', workers, worker)
return #ids

-- Record a run's merged plan unless it changed since it was read (then return the current one to merge again).
-- KEYS: run
-- ARGV: read merged config_version params
-- Returns false when written.
local cur = redis.call('HGET', run, RUN.plan)
if cur and cur ~= read then return cur end
redis.call('HSET', run, RUN.plan, merged, RUN.config_version, config_version, RUN.params, params)
return false

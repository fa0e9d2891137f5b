-- Record a run's merged plan unless it changed since it was read (then return the current one to merge again).
-- KEYS: run defs defs_index
-- ARGV: read merged_ref merged config_version params defs_prefix now
-- read: the ref of the plan the merge started from; merged: the merged plan's JSON, recorded under its ref in the
-- definitions version `config_version` (`defs`); params: '' = none. Returns false when written, else the
-- current plan's JSON.
local cur = redis.call('HMGET', run, RUN.plan, RUN.config_version)
if cur[1] and cur[1] ~= read then
  return redis.call('HGET', defs_prefix .. (cur[2] or ''), DEFS.plan .. cur[1]) or ''
end
redis.call('HSETNX', defs, DEFS.plan .. merged_ref, merged)
redis.call('ZADD', defs_index, now, config_version)
redis.call('HSET', run, RUN.plan, merged_ref, RUN.config_version, config_version)
if params ~= '' then redis.call('HSET', run, RUN.params, params) end
return false

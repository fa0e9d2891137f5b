-- The pre-read of a matcher batch: what Python needs to plan it (run plans, and the statuses a join waits on).
-- KEYS:
-- ARGV: defs_prefix runs...
-- runs: pairs of (run key, mode): 'plan' reads the plan only, 'all' the whole hash too.
-- Returns per run {plan JSON or '', the hash's field/value pairs ({} in mode 'plan' or for a run that does not
-- exist)}.
local out = {}
for i = runs, #ARGV, 2 do
  local key, mode = ARGV[i], ARGV[i + 1]
  local ref = redis.call('HMGET', key, RUN.plan, RUN.config_version)
  local plan = ref[1] and redis.call('HGET', defs_prefix .. (ref[2] or ''), DEFS.plan .. ref[1]) or ''
  out[#out + 1] = {plan, mode == 'all' and redis.call('HGETALL', key) or {}}
end
return out

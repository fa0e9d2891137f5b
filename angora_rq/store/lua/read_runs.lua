-- The pre-read of a matcher batch: what Python needs to plan it (run plans, and the statuses a join waits on).
-- KEYS:
-- ARGV: runs...
-- runs: pairs of (run key, mode): 'plan' reads the plan field only, 'all' the whole hash.
-- Returns per run its field/value pairs ({} for a run that does not exist).
local out = {}
for i = runs, #ARGV, 2 do
  local key, mode = ARGV[i], ARGV[i + 1]
  if mode == 'all' then
    out[#out + 1] = redis.call('HGETALL', key)
  else
    local plan = redis.call('HGET', key, RUN.plan)
    out[#out + 1] = plan and {RUN.plan, plan} or {}
  end
end
return out

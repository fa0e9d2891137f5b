-- An attempt that ended or was dropped settles the attempt it replays: that one stops showing `replaying` (a replay
-- is scheduled) and shows `failed`. Sent only for attempts after the first.
-- KEYS: exec
-- ARGV: exec_prefix
-- exec: this attempt's hash; exec_prefix .. an id is an execution's key. Returns 1. Idempotent.
local prev = redis.call('HGET', exec, EXEC.replay_of)
if prev and prev ~= '' then
  local pk = exec_prefix .. prev
  if redis.call('HGET', pk, EXEC.status) == STATUS.replaying then redis.call('HSET', pk, EXEC.status, STATUS.failed) end
end
return 1

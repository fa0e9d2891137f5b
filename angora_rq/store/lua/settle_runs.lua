-- Record what a settler (store/runindex.py) read of some unsettled runs, for each run only if nothing reopened it since
-- the read (its change counter in `unsettled` is still the one read): take it out of the finished-run indexes it is
-- not in any more; a finished run goes into its status's index and leaves `unsettled`; a run that is gone leaves it.
-- KEYS: unsettled succeeded failed canceled
-- ARGV: runs...
-- succeeded, failed, canceled: the finished-run indexes (sorted sets by start time); runs: per run its id, the
-- counter read, its outcome (succeeded, failed, canceled, 'live' or 'gone') and its start time.
-- Returns how many runs left `unsettled`. Idempotent.
local index = {[STATUS.succeeded] = succeeded, [STATUS.failed] = failed, [STATUS.canceled] = canceled}
local settled = 0
for p = runs, #ARGV, 4 do
  local id, seen, outcome, created = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  if (redis.call('HGET', unsettled, id) or '') == seen then
    for status, key in pairs(index) do
      if status ~= outcome then redis.call('ZREM', key, id) end
    end
    if index[outcome] then redis.call('ZADD', index[outcome], created, id) end
    if outcome ~= 'live' then
      redis.call('HDEL', unsettled, id)
      settled = settled + 1
    end
  end
end
return settled

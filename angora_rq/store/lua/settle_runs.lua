-- Record what a settler (store/runindex.py) read of some unsettled runs, for each run only if nothing reopened it since
-- the read (its change counter in `unsettled` is still the one read): take it out of the finished-run indexes it is
-- not in any more; a finished run goes into its status's index and leaves `unsettled`; a run that is gone leaves it.
-- KEYS: unsettled succeeded failed canceled
-- ARGV: runs...
-- succeeded, failed, canceled: the finished-run indexes (sorted sets by start time); runs: per run its id, the
-- counter read, its outcome (succeeded, failed, canceled, 'live' or 'gone') and its start time.
-- Returns how many runs left `unsettled`. Idempotent.
-- Each key is written once per call, whatever the number of runs (one HMGET, at most one ZREM and one ZADD per
-- index, one HDEL): the settle's writes were 5 commands per run, most of the settle's cost.
local index = {[STATUS.succeeded] = succeeded, [STATUS.failed] = failed, [STATUS.canceled] = canceled}
local ids = {}
for p = runs, #ARGV, 4 do ids[#ids + 1] = ARGV[p] end
if #ids == 0 then return 0 end
local current = {}
for i = 1, #ids, 1000 do  -- unpack() is limited to a few thousand values
  local got = redis.call('HMGET', unsettled, unpack(ids, i, math.min(i + 999, #ids)))
  for j = 1, #got do current[#current + 1] = got[j] end
end
local out, into, gone = {}, {}, {}
for status, _ in pairs(index) do
  out[status] = {}
  into[status] = {}
end
local i = 0
for p = runs, #ARGV, 4 do
  i = i + 1
  local id, seen, outcome, created = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  if (current[i] or '') == seen then
    for status, _ in pairs(index) do
      if status ~= outcome then table.insert(out[status], id) end
    end
    if index[outcome] then
      table.insert(into[outcome], created)
      table.insert(into[outcome], id)
    end
    if outcome ~= 'live' then gone[#gone + 1] = id end
  end
end
local function each(command, key, values)
  for j = 1, #values, 1000 do redis.call(command, key, unpack(values, j, math.min(j + 999, #values))) end
end
for status, key in pairs(index) do
  each('ZREM', key, out[status])
  each('ZADD', key, into[status])
end
each('HDEL', unsettled, gone)
return #gone

-- Take a batch of executions out of a worker's inflight list: one LREM each for one or two, else one read of the
-- (short: at most the worker's concurrency) list and one rewrite. all_or_nothing '1': every execution must still
-- be there (claimed by this worker and not taken back by a janitor since, store/lua/reap.lua); if one is not, the
-- list is left as it was and 0 is returned. Returns 1 otherwise.
-- KEYS: inflight
-- ARGV: all_or_nothing ids...
if #ARGV - ids + 1 <= 2 then
  local taken = {}
  for i = ids, #ARGV do
    if redis.call('LREM', inflight, 1, ARGV[i]) == 1 then
      taken[#taken + 1] = ARGV[i]
    elseif all_or_nothing == '1' then
      if #taken > 0 then redis.call('RPUSH', inflight, unpack(taken)) end
      return 0
    end
  end
  return 1
end
local wanted, rest, found = {}, {}, 0
for i = ids, #ARGV do wanted[ARGV[i]] = true end
for _, id in ipairs(redis.call('LRANGE', inflight, 0, -1)) do
  if wanted[id] then
    wanted[id] = nil
    found = found + 1
  else
    rest[#rest + 1] = id
  end
end
if all_or_nothing == '1' and found < #ARGV - ids + 1 then return 0 end
if found > 0 then
  redis.call('DEL', inflight)
  for i = 1, #rest, 1000 do redis.call('RPUSH', inflight, unpack(rest, i, math.min(i + 999, #rest))) end
end
return 1

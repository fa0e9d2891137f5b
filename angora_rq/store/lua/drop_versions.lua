-- Drop definitions versions whose last use is still before `cutoff` (a DISPATCH since may have used one again).
-- KEYS: index
-- ARGV: cutoff defs_prefix versions...
-- Returns how many went.
local n = 0
for i = versions, #ARGV do
  local score = redis.call('ZSCORE', index, ARGV[i])
  if score and tonumber(score) < tonumber(cutoff) then
    redis.call('DEL', defs_prefix .. ARGV[i])
    redis.call('ZREM', index, ARGV[i])
    n = n + 1
  end
end
return n

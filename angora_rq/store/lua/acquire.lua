-- Take the schedulers' lease if nobody holds it, with a new fencing token.
-- KEYS: lease fence
-- ARGV: holder ttl_ms
-- Returns the new token, or 0 when someone else holds the lease.
local token = tonumber(redis.call('GET', fence) or '0') + 1
if redis.call('SET', lease, holder .. ' ' .. token, 'NX', 'PX', ttl_ms) then
  redis.call('INCR', fence)
  return token
end
return 0

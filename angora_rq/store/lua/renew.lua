-- Extend the schedulers' lease if this term still holds it.
-- KEYS: lease
-- ARGV: value ttl_ms
-- value: the term's "holder token". Returns 1 when still ours (extended), else 0.
if redis.call('GET', lease) == value then
  redis.call('PEXPIRE', lease, ttl_ms)
  return 1
end
return 0

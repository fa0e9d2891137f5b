-- Give the schedulers' lease up if this term still holds it.
-- KEYS: lease
-- ARGV: value
-- value: the term's "holder token". Returns 1 when deleted, else 0.
if redis.call('GET', lease) == value then return redis.call('DEL', lease) end
return 0

-- Accept a root message unless the stream is over its backlog budget; count it in its run. With an idempotency
-- key, a repeat gets the first answer back and sends nothing: the check and the record are this one step, so two
-- repeats at once cannot both send.
-- KEYS: stream run runs idem
-- ARGV: budget now run_id topic origin idem_ttl fingerprint fields...
-- budget: the most entries the stream may hold (0 = no limit); idem: the key's record ('' = no key), kept idem_ttl
-- seconds as "<run id> <entry id> <fingerprint>"; fields: the entry's field/value pairs.
-- Returns the entry id; for a repeat {first run id, first entry id}; or the error BACKLOG, or KEYREUSE when the
-- key was first used for another message (another fingerprint). Without a key, each call adds an entry.
if idem ~= '' then
  local first = redis.call('GET', idem)
  if first then
    local run0, entry0, print0 = string.match(first, '^(%S+) (%S+) (%S*)$')
    if print0 ~= fingerprint then return redis.error_reply('KEYREUSE ' .. run0 .. ' ' .. entry0) end
    return {run0, entry0}
  end
end
local cap = tonumber(budget)
if cap > 0 and redis.call('XLEN', stream) >= cap then
  return redis.error_reply('BACKLOG stream holds ' .. cap .. ' messages or more')
end
local id = redis.call('XADD', stream, '*', unpack(ARGV, fields))
redis.call('HINCRBY', run, RUN.active, 1)
if redis.call('HSETNX', run, RUN.created, now) == 1 then
  redis.call('HSET', run, RUN.run_id, run_id, RUN.topic, topic, RUN.origin, origin)
  redis.call('ZADD', runs, now, run_id)
end
if idem ~= '' then redis.call('SET', idem, run_id .. ' ' .. id .. ' ' .. fingerprint, 'EX', idem_ttl) end
return id

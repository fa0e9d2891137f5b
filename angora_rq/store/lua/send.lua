-- Accept a root message unless the stream is over its backlog budget; count it in its run.
-- KEYS: stream run runs events outbox
-- ARGV: budget now run_id topic origin run_prefix outbox_cap fields...
-- include: publish
-- budget: the most entries the stream may hold (0 = no limit); fields: the entry's field/value pairs.
-- Returns the entry id, or the error BACKLOG. Not idempotent: each call adds an entry (the run is created once,
-- and publishes angora.run.started when something listens: events, outbox and run_prefix are PUBLISH's).
local cap = tonumber(budget)
if cap > 0 and redis.call('XLEN', stream) >= cap then
  return redis.error_reply('BACKLOG stream holds ' .. cap .. ' messages or more')
end
local id = redis.call('XADD', stream, '*', unpack(ARGV, fields))
redis.call('HINCRBY', run, RUN.active, 1)
if redis.call('HSETNX', run, RUN.created, now) == 1 then
  redis.call('HSET', run, RUN.run_id, run_id, RUN.topic, topic, RUN.origin, origin)
  redis.call('ZADD', runs, now, run_id)
  publish({events, stream, runs, outbox}, {EVENT.run .. 'started', now, run_prefix, outbox_cap, run_id,
                                          'status', 'started', 'topic', topic})
end
return id

-- Publish an event (core/events.py) if some job or webhook listens to its topic, as the events hash says: for
-- jobs, a root message on the stream in a run of its own (origin EVENT.origin .. topic), counted like SEND; for
-- webhooks, the event as JSON on the outbox the deliverer drains (bounded to outbox_cap, newest kept).
-- KEYS: events stream runs outbox work accepted unsettled
-- ARGV: topic now run_prefix outbox_cap source_run fields...
-- fields: name/value pairs saying more (status, job, execution_id, topic): in the webhook's JSON as they are, in
-- the message's params as ANGORA_EVENT_<NAME>. Loop guard: the events of a run an event started reach webhooks,
-- never jobs. An event's message counts like SEND's (its run's active, `work`, `accepted`), unrefused by budgets.
-- Returns 1 if it went anywhere, else 0.
local flags = redis.call('HGET', events, topic)
if not flags then return 0 end
local body = {event = topic, time = tonumber(now), run_id = source_run}
local params = {ANGORA_EVENT = topic, ANGORA_EVENT_RUN_ID = source_run}
for i = fields, #ARGV, 2 do
  body[ARGV[i]] = ARGV[i + 1]
  params['ANGORA_EVENT_' .. string.upper(ARGV[i])] = ARGV[i + 1]
end
local origin = redis.call('HGET', run_prefix .. source_run, RUN.origin) or ''
if string.find(flags, 'j', 1, true) and string.sub(origin, 1, #EVENT.origin) ~= EVENT.origin then
  local run_id = 'ev' .. math.floor(tonumber(now) * 1000) .. '-' .. redis.call('HINCRBY', events, '#seq', 1)
  local o = EVENT.origin .. topic
  redis.call('XADD', stream, '*', ENTRY.topic, topic, ENTRY.run, run_id, ENTRY.origin, o, ENTRY.sent, now,
             ENTRY.params, cjson.encode(params))
  redis.call('HSET', run_prefix .. run_id, RUN.created, now, RUN.topic, topic, RUN.origin, o)
  redis.call('HINCRBY', run_prefix .. run_id, RUN.active, 1)
  redis.call('INCR', work)
  redis.call('INCR', accepted)
  redis.call('ZADD', runs, now, run_id)
  redis.call('HINCRBY', unsettled, run_id, 1)  -- a new live run: the run indexes look at it (store/runindex.py)
end
if string.find(flags, 'w', 1, true) then
  redis.call('LPUSH', outbox, cjson.encode(body))
  redis.call('LTRIM', outbox, 0, tonumber(outbox_cap) - 1)
end
return 1

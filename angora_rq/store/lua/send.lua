-- Accept a root message unless a budget is used up; count it in its run and in the deployment's counters. With an
-- idempotency key, a repeat gets the first answer back and sends nothing (even over budget, since it adds no work):
-- the check and the record are this one step, so two repeats at once cannot both send. The run is (again) live:
-- its change counter in `unsettled` moves, so the run indexes look at it (store/runindex.py).
-- KEYS: stream run runs work accepted idem unsettled events outbox events_on
-- ARGV: budget accepted_cap now run_id topic origin idem_ttl fingerprint fresh run_prefix outbox_cap entry listen
-- ARGV: fields...
-- include: publish run_count
-- lib: skip_wrongtype
-- fresh: '1' when the run id was generated for this message (the run cannot exist: it is written without a read).
-- budget: the most accepted-but-unfinished work (the `work` counter; 0 = no limit); accepted_cap: the value of
-- the `accepted` counter past which Redis' memory budget is used up ('' = no memory budget; the caller projects
-- it from INFO memory, read at most once a second). Two O(1) reads, whatever the size of the backlog.
-- idem: the key's record ('' = no key), kept idem_ttl seconds as "<run id> <entry id> <fingerprint>";
-- fields: the entry's field/value pairs (none with an entry). entry: '' (the message goes on the stream: its entry
-- id is the answer), or the answer of a message dispatched by the same call instead (send_dispatch.lua: no stream
-- entry is added).
-- Returns the entry id; for a repeat {first run id, first entry id}; or the error `BUDGET work <used> <budget>` /
-- `BUDGET memory <accepted> <cap>`, or `KEYREUSE <run> <entry>` when the key was first used for another message
-- (another fingerprint). Without a key, each call adds an entry (the run is created once, and publishes
-- angora.run.started when something listens: events, outbox, run_prefix and outbox_cap are PUBLISH's).
-- listen: whether any event has a listener: '1' or '' from the caller's copy of the events hash (store/events.py,
-- read at most once a second), or '?' to look at `events_on` (set while any event has a listener) here.
-- The counters are moved first and moved back when a budget refuses (a refusal writes nothing in the end): INCR
-- answers the value it replaces, so the budgets cost no read (one command per message fewer than an MGET).
if idem ~= '' then
  local first = redis.call('GET', idem)
  if first then
    local run0, entry0, print0 = string.match(first, '^(%S+) (%S+) (%S*)$')
    if print0 ~= fingerprint then return redis.error_reply('KEYREUSE ' .. run0 .. ' ' .. entry0) end
    return {run0, entry0}
  end
end
local cap, room = tonumber(budget), tonumber(accepted_cap)  -- room: nil when there is no memory budget
local used = redis.call('INCR', work) - 1
if cap > 0 and used >= cap then
  redis.call('DECR', work)
  return redis.error_reply('BUDGET work ' .. used .. ' ' .. cap)
end
local sent = redis.call('INCR', accepted) - 1
if room and sent >= room then
  redis.call('DECR', accepted)
  redis.call('DECR', work)
  return redis.error_reply('BUDGET memory ' .. sent .. ' ' .. room)
end
local id = entry
if id == '' then
  id = redis.pcall('XADD', stream, '*', unpack(ARGV, fields))
  if type(id) == 'table' then  -- not accepted (the stream is not a stream: corrupted data): the counters go back
    redis.call('DECR', accepted)
    redis.call('DECR', work)
    return id
  end
end
-- Accepted from here (on the stream, or dispatched by SEND_DISPATCH next): a failure must not answer an error that a
-- client would send again, so the rest goes past a key of the wrong type (lib/skip_wrongtype.lua; a matcher puts
-- a message whose run cannot be read aside as a dead letter).
local started = fresh == '1' or w('HSETNX', run, RUN.created, now) == 1
if started then
  w('HSET', run, RUN.created, now, RUN.topic, topic, RUN.origin, origin, RUN.active, 1)
  w('ZADD', runs, now, run_id)
end
-- (events_on is looked at only for a run this message starts: nothing else here publishes)
if started and (listen == '1' or (listen == '?' and redis.call('EXISTS', events_on) == 1)) then
  local done, err = pcall(publish, {events, stream, runs, outbox, work, accepted, unsettled},
                          {EVENT.run .. 'started', now, run_prefix, outbox_cap, run_id, 'status', 'started', 'topic',
                           topic})
  if not done then note(err) end
end
if not started then
  local done, err = pcall(run_count, {run}, {1, now})
  if not done then note(err) end
end
if idem ~= '' then redis.call('SET', idem, run_id .. ' ' .. id .. ' ' .. fingerprint, 'EX', idem_ttl) end
w('HINCRBY', unsettled, run_id, 1)
if #wrongtype > 0 then redis.log(redis.LOG_WARNING, 'angora SEND: not written: ' .. table.concat(wrongtype, '; ')) end
return id

-- Send one schedule's message for one tick (mode 'send'), or only record the tick (mode 'mark'), fenced: nothing
-- happens unless the lease still holds this term's value and the tick is newer than the schedule's last one.
-- The message goes out exactly as SEND sends it (same fields, counters, budgets and idempotency record).
-- KEYS: stream run runs work accepted idem unsettled lease schedule events outbox events_on
-- ARGV: budget accepted_cap now run_id topic origin idem_ttl fingerprint fresh lease_value tick_ms token run_prefix
-- ARGV: overlap mode schedule_name covers outbox_cap fields...
-- include: send
-- idem: the tick's idempotency record (SEND's), so a tick whose schedule state was lost is not sent again.
-- overlap 'forbid': skip the tick while the run of the previous one is active. Numbers are compared as numbers
-- and stored as the argument text (a Lua number may print as 1.7e+12).
-- A tick refused by a budget is skipped and recorded with SEND's reason (`BUDGET work <used> <budget>`...).
-- Returns {outcome, detail}: sent <entry id> | marked | stale <last> | fenced | overlap <run id> | budget <reason> |
-- replayed <first entry id> (sent before: recorded as the last tick, not sent again) | early <Redis' time, ms>:
-- a tick later than Redis' clock is not sent, whatever the sender's clock says.
local tick, fence = tonumber(tick_ms), tonumber(token)
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if mode ~= 'mark' and tick > now_ms then return {'early', tostring(now_ms)} end
if redis.call('GET', lease) ~= lease_value then return {'fenced', ''} end
local st = redis.call('HMGET', schedule, SCHEDULE.last, SCHEDULE.token, SCHEDULE.run)
if st[2] and tonumber(st[2]) > fence then return {'fenced', ''} end
if st[1] and tonumber(st[1]) >= tick then return {'stale', st[1]} end
if mode == 'mark' then
  redis.call('HSET', schedule, SCHEDULE.last, tick_ms, SCHEDULE.token, token)
  return {'marked', ''}
end
if overlap == 'forbid' and st[3] and st[3] ~= '' then
  local active = tonumber(redis.call('HGET', run_prefix .. st[3], RUN.active) or '0') or 0
  if active > 0 then
    redis.call('HSET', schedule, SCHEDULE.last, tick_ms, SCHEDULE.token, token, SCHEDULE.last_skipped, tick_ms,
               SCHEDULE.skip_reason, 'overlap ' .. st[3])
    redis.call('HINCRBY', schedule, SCHEDULE.skipped, 1)
    return {'overlap', st[3]}
  end
end
local id = send({stream, run, runs, work, accepted, idem, unsettled, events, outbox, events_on},
                {budget, accepted_cap, now, run_id, topic, origin, idem_ttl, fingerprint, fresh, run_prefix,
                 outbox_cap, '', '?', unpack(ARGV, fields)})
if type(id) == 'table' then
  local err = id.err or ''
  if string.sub(err, 1, 6) == 'BUDGET' then
    redis.call('HSET', schedule, SCHEDULE.last, tick_ms, SCHEDULE.token, token, SCHEDULE.last_skipped, tick_ms,
               SCHEDULE.skip_reason, err)
    redis.call('HINCRBY', schedule, SCHEDULE.skipped, 1)
    return {'budget', err}
  end
  redis.call('HSET', schedule, SCHEDULE.last, tick_ms, SCHEDULE.token, token)
  return {'replayed', id[2] or string.match(err, '(%S+)$') or ''}
end
redis.call('HSET', run, RUN.schedule, schedule_name, RUN.tick, tick_ms, RUN.covers, covers)
redis.call('HSET', schedule, SCHEDULE.last, tick_ms, SCHEDULE.token, token, SCHEDULE.run, run_id,
           SCHEDULE.entry, id, SCHEDULE.sent_at, now)
redis.call('HINCRBY', schedule, SCHEDULE.sent, 1)
return {'sent', id}

-- Once a run has nothing in flight (active <= 0), publish how it ended: angora.run.canceled if it was canceled,
-- angora.run.failed if a job of it failed (core/schema.py FAILED: failed, killed, upstream_failed, rejected),
-- else angora.run.succeeded (runs.summarize's rules). Callers run it right after they took something out of
-- the run's count, so each end is published once.
-- KEYS: run events stream runs outbox work accepted unsettled
-- ARGV: run_id now run_prefix outbox_cap
-- include: publish
-- Returns the run's status, or '' while it is still active.
if (tonumber(redis.call('HGET', run, RUN.active) or '0') or 0) > 0 then return '' end
local h = redis.call('HGETALL', run)
local status, topic = STATUS.succeeded, ''
local prefix = RUN.job_status
for i = 1, #h, 2 do
  local k, v = h[i], h[i + 1]
  if k == RUN.canceled and v == '1' then
    status = STATUS.canceled
  elseif k == RUN.topic then
    topic = v
  elseif status == STATUS.succeeded and string.sub(k, 1, #prefix) == prefix and (v == STATUS.failed
      or v == STATUS.killed or v == STATUS.upstream_failed or v == STATUS.rejected) then
    status = STATUS.failed
  end
end
publish({events, stream, runs, outbox, work, accepted, unsettled},
        {EVENT.run .. status, now, run_prefix, outbox_cap, run_id, 'status', status, 'topic', topic})
return status

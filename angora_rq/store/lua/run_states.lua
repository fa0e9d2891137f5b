-- Where some runs stand, for the run indexes (store/runindex.py): per run created, active, canceled, started, n.
-- KEYS:
-- ARGV: mode not_started runs...
-- mode: 'brief', or 'status' to fill `started`: '1' when any of the run's job status fields holds a status outside
-- `not_started` (space-separated: core/schema.NOT_STARTED), else '0'; that is all core/runs.summarize needs to
-- tell a queued run from a running one, without sending the run's fields (hundreds, with a big plan) back.
-- runs: run keys. n: 0, or for a run that has finished (created, and active <= 0) the number of its hash's fields,
-- which follow as field/value pairs (its whole hash, read here rather than in another round trip). One flat array
-- for all the runs: a nested one costs Redis a reply buffer, and a write(2), per run. Read-only.
local waiting = {}
for s in string.gmatch(not_started, '%S+') do waiting[s] = true end
local prefix = RUN.job_status
local out = {}
for i = runs, #ARGV do
  -- One read per run: most runs read here have finished, and are sent back whole (an HMGET of the three fields
  -- first cost a command more per run; a live run's fields are read and not sent).
  local h = redis.call('HGETALL', ARGV[i])
  local created, active, canceled = '', '', ''
  for j = 1, #h, 2 do
    local k = h[j]
    if k == RUN.created then created = h[j + 1]
    elseif k == RUN.active then active = h[j + 1]
    elseif k == RUN.canceled then canceled = h[j + 1] end
  end
  local started = ''
  local live = tonumber(active ~= '' and active or '0') > 0
  if mode == 'status' and created ~= '' and live then
    started = '0'
    for j = 1, #h, 2 do
      if h[j]:sub(1, #prefix) == prefix and not waiting[h[j + 1]] then
        started = '1'
        break
      end
    end
  end
  local o = #out
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = created, active, canceled, started
  if created ~= '' and not live then
    out[o + 5] = #h / 2
    for j = 1, #h do out[o + 5 + j] = h[j] end
  else
    out[o + 5] = 0
  end
end
return out

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
  local key = ARGV[i]
  local row = redis.call('HMGET', key, RUN.created, RUN.active, RUN.canceled)
  local started = ''
  if mode == 'status' and row[1] and tonumber(row[2] or '0') > 0 then
    started = '0'
    local h = redis.call('HGETALL', key)
    for j = 1, #h, 2 do
      if h[j]:sub(1, #prefix) == prefix and not waiting[h[j + 1]] then
        started = '1'
        break
      end
    end
  end
  local o = #out
  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = row[1] or '', row[2] or '', row[3] or '', started
  local whole = row[1] and tonumber(row[2] or '0') <= 0 and redis.call('HGETALL', key) or {}
  out[o + 5] = #whole / 2
  for j = 1, #whole do out[o + 5 + j] = whole[j] end
end
return out

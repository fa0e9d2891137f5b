-- Where some runs stand, for the run indexes (store/runindex.py): per run {created, active, canceled, started}.
-- KEYS:
-- ARGV: mode not_started runs...
-- mode: 'brief', or 'status' to fill `started`: '1' when any of the run's job status fields holds a status outside
-- `not_started` (space-separated: core/schema.NOT_STARTED), else '0'; that is all core/runs.summarize needs to
-- tell a queued run from a running one, without sending the run's fields (hundreds, with a big plan) back.
-- runs: run keys. Read-only.
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
  out[#out + 1] = {row[1] or '', row[2] or '', row[3] or '', started}
end
return out

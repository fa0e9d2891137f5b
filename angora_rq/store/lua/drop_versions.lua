-- Drop definitions versions whose last use is still before `cutoff` (a DISPATCH since may have used one again), and
-- with them what is kept per job of a job no version left records (nothing kept ran it): its statistics, its
-- history list and its run index. So statistics are bounded by what history keeps.
-- KEYS: index indexed_jobs
-- ARGV: cutoff defs_prefix stats_prefix execs_suffix by_job_prefix versions...
-- stats_prefix .. job (.. execs_suffix): a job's statistics (history list); by_job_prefix .. job: its run index;
-- indexed_jobs: the set of jobs with a run index. Returns {versions dropped, jobs dropped}.
local gone, names = 0, {}
for i = versions, #ARGV do
  local score = redis.call('ZSCORE', index, ARGV[i])
  if score and tonumber(score) < tonumber(cutoff) then
    local key = defs_prefix .. ARGV[i]
    for _, f in ipairs(redis.call('HKEYS', key)) do
      if f:sub(1, #DEFS.job) == DEFS.job then names[f:sub(#DEFS.job + 1)] = true end
    end
    redis.call('DEL', key)
    redis.call('ZREM', index, ARGV[i])
    gone = gone + 1
  end
end
local kept = redis.call('ZRANGE', index, 0, -1)
local jobs = 0
for job, _ in pairs(names) do
  local used = false
  for _, v in ipairs(kept) do
    if redis.call('HEXISTS', defs_prefix .. v, DEFS.job .. job) == 1 then
      used = true
      break
    end
  end
  if not used then
    redis.call('DEL', stats_prefix .. job, stats_prefix .. job .. execs_suffix, by_job_prefix .. job)
    redis.call('SREM', indexed_jobs, job)
    jobs = jobs + 1
  end
end
return {gone, jobs}

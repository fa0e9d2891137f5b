-- Move a run's count of what it has in flight (RUN.active) by delta, keeping its end time (RUN.ended) in step:
-- written (now) when the count comes to 0, the moment its last piece finished; removed when a run that had ended
-- counts something again (a retry, a re-run of its failed jobs, a message to its id), to be written anew when it
-- ends again. Costs one HINCRBY, and one more command only at those two moments. fields: more field/value pairs of
-- the run to write, in the same HSET (a finished job's status: one command where there were two). (A message a Python pipeline
-- counts in an ended run, bus.send_in, leaves the old end time until the run ends again: readers take RUN.ended
-- only while the count is 0, store/queries.run_view.)
-- KEYS: run
-- ARGV: delta now fields...
-- Returns the new count.
local d = tonumber(delta)
local left = redis.call('HINCRBY', run, RUN.active, d)
if left <= 0 and d < 0 then
  redis.call('HSET', run, RUN.ended, now, unpack(ARGV, fields))
else
  if fields <= #ARGV then redis.call('HSET', run, unpack(ARGV, fields)) end
  if left == d and d > 0 then redis.call('HDEL', run, RUN.ended) end
end
return left

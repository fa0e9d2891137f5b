-- Put aside as a dead letter a message a matcher could not dispatch (its entry failed alone, and was to blame:
-- processes/matcher.py): unless it was handled meanwhile (no longer pending for `consumer`), acknowledge it, keep `record`
-- (JSON) at the head of the `letters` list (the newest `cap`), count it in `metrics`, and take back what accepting
-- it counted: one in its run (which may end with it) and one in `work`. Nothing was created for it, since a failed
-- DISPATCH queues nothing (dispatch.lua writes its counts, queues and acknowledgements last).
-- KEYS: stream letters metrics run work events runs outbox accepted unsettled
-- ARGV: group consumer entry record cap run_id now run_prefix outbox_cap events_on
-- include: run_count run_end
-- run: the run key ('' when the entry names none): its counts move only if it is a hash (a run SEND created).
-- events_on: '' when no event has a listener, else a run this ends publishes how it ended.
-- Returns 1 when the message was put aside, 0 when it was not pending for `consumer` any more.
if #redis.call('XPENDING', stream, group, entry, entry, 1, consumer) == 0 then return 0 end
redis.call('LPUSH', letters, record)
redis.call('LTRIM', letters, 0, tonumber(cap) - 1)
redis.call('HINCRBY', metrics, METRICS.dead_letters, 1)
if run ~= '' and redis.call('TYPE', run).ok == 'hash' then
  redis.call('INCRBY', work, -1)
  if run_count({run}, {-1, now}) <= 0 and events_on ~= '' then
    run_end({run, events, stream, runs, outbox, work, accepted, unsettled}, {run_id, now, run_prefix, outbox_cap})
  end
end
redis.call('XACK', stream, group, entry)
return 1

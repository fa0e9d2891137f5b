-- Accept a root message and dispatch it in one atomic step, with no stream entry: SEND (without its XADD), then
-- DISPATCH in its 'root' mode for that one message, which starts a fresh run (the web's /send when its definitions
-- are the matchers' and no job of the topic is a parent_success join: store/bus.submit_direct). A repeat of an
-- idempotency key, or a message a budget refuses, gets SEND's answer and dispatches nothing.
-- KEYS: stream run runs work accepted idem unsettled events outbox events_on paused_jobs rq_queues defs defs_index metrics approvals
-- ARGV: budget accepted_cap now run_id topic origin idem_ttl fingerprint fresh run_prefix outbox_cap entry
-- ARGV: now_iso history group consumer first last config_version bell_cap exec_prefix rq_job_prefix defs_prefix
-- ARGV: listened direct n_jobs n_messages n_dispatches n_fields rest...
-- include: send dispatch
-- Names are SEND's and DISPATCH's (see their headers); entry: the answer instead of an entry id (SEND's);
-- direct: 'root'; rest: SEND's n_fields fields, then DISPATCH's batch; listened: DISPATCH's events_on and SEND's
-- listen (a flag, '1' or '': the name events_on is SEND's key's here). DISPATCH's spare is 0: no claim follows in
-- this call.
-- Returns SEND's answer: `entry` (dispatched), {first run id, first answer} for a repeat, or SEND's error.
local function with(list, from, to)  -- list, then ARGV[from..to] (unpack() is limited to a few thousand values)
  for i = from, to do list[#list + 1] = ARGV[i] end
  return list
end
local nf = tonumber(n_fields)
local sent = send({stream, run, runs, work, accepted, idem, unsettled, events, outbox, events_on},
                  with({budget, accepted_cap, now, run_id, topic, origin, idem_ttl, fingerprint, fresh, run_prefix,
                        outbox_cap, entry, listened}, rest, rest + nf - 1))
if type(sent) == 'table' then return sent end
local done, err = pcall(dispatch, {stream, paused_jobs, rq_queues, defs, defs_index, work, metrics, approvals, events,
                                  runs, outbox, accepted, unsettled},
                        with({now, now_iso, history, group, consumer, first, last, config_version, bell_cap,
                              exec_prefix, rq_job_prefix, defs_prefix, run_prefix, outbox_cap, listened, direct, 0,
                              n_jobs, n_messages, n_dispatches}, rest + nf, #ARGV))
if not done then
  -- DISPATCH failed before anything it writes could be repeated (a key of the wrong type: corrupted data), so it
  -- queued nothing: the accepted message goes on the stream, where a matcher dispatches it again (and puts it
  -- aside as a dead letter if it keeps failing), instead of being lost. Its answer stays this call's id.
  redis.log(redis.LOG_WARNING, 'angora SEND_DISPATCH: dispatched through the stream instead: ' ..
            tostring(type(err) == 'table' and err.err or err))
  local p = rest + nf  -- DISPATCH's batch: its jobs, then the message (whose params are its fifth value)
  for _ = 1, tonumber(n_jobs) do p = p + 12 + tonumber(ARGV[p + 11]) * 2 end
  local entry_fields = {ENTRY.topic, topic, ENTRY.run, run_id, ENTRY.origin, origin, ENTRY.sent, now}
  if ARGV[p + 4] ~= '' then
    entry_fields[#entry_fields + 1] = ENTRY.params
    entry_fields[#entry_fields + 1] = ARGV[p + 4]
  end
  redis.call('XADD', stream, '*', unpack(entry_fields))
end
return sent

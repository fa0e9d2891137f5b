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
dispatch({stream, paused_jobs, rq_queues, defs, defs_index, work, metrics, approvals, events, runs, outbox, accepted,
          unsettled},
         with({now, now_iso, history, group, consumer, first, last, config_version, bell_cap, exec_prefix,
               rq_job_prefix, defs_prefix, run_prefix, outbox_cap, listened, direct, 0, n_jobs, n_messages,
               n_dispatches}, rest + nf, #ARGV))
return sent

-- Accept root messages and dispatch them in one atomic step, with no stream entry: SEND (without its XADD) for
-- each message in order, then one DISPATCH in its 'root' mode for every message SEND accepted, each of which
-- starts a fresh run (the web's /send when its definitions are the matchers' and no job of the topic is a
-- parent_success join: store/dispatch.submit_directs, one call for the sends a web process coalesced,
-- store/sendgroup.py). A repeat of an idempotency key (an earlier message of the same batch included), or a
-- message a budget refuses, gets SEND's answer and creates nothing; the budgets see the messages accepted before
-- it in the batch, each counted once (its further executions are counted by the DISPATCH that follows).
-- KEYS: stream runs work accepted unsettled events outbox events_on paused_jobs rq_queues defs defs_index metrics approvals
-- ARGV: budget accepted_cap now idem_ttl run_prefix outbox_cap direct_prefix
-- ARGV: now_iso history group consumer first last config_version bell_cap exec_prefix rq_job_prefix defs_prefix
-- ARGV: listened direct n_jobs n_messages n_dispatches rest...
-- include: send dispatch
-- Names are SEND's and DISPATCH's (see their headers); listened: DISPATCH's events_on (a flag; the name is SEND's
-- key's here); direct: 'root' (DISPATCH's spare is 0: no claim follows). rest: per message its idempotency key's record ('' = none) and fingerprint, then
-- DISPATCH's batch (its jobs, n_messages messages, n_dispatches dispatches); SEND takes each message's run id,
-- topic, origin and run key from its DISPATCH message; its answer is direct_prefix .. run id (no entry id).
-- Returns three values per message, in order: 'sent', its answer, '' | 'again', first run id, first answer (a
-- repeat) | 'refused', SEND's error text, ''.
local nm, nd = tonumber(n_messages), tonumber(n_dispatches)
local first_msg, first_dispatch = #ARGV - 4 * nd - 8 * nm + 1, #ARGV - 4 * nd + 1
local answers, renumber, live = {}, {}, 0
for m = 1, nm do
  local at = first_msg + (m - 1) * 8  -- entry, run id, topic, origin, params, run key, plan mode, plan
  local run_id, idem_at = ARGV[at + 1], rest + (m - 1) * 2
  local sent = send({stream, ARGV[at + 5], runs, work, accepted, ARGV[idem_at], unsettled, events, outbox, events_on},
                    {budget, accepted_cap, now, run_id, ARGV[at + 2], ARGV[at + 3], idem_ttl, ARGV[idem_at + 1], '1',
                     run_prefix, outbox_cap, direct_prefix .. run_id})
  if type(sent) ~= 'table' then
    live = live + 1
    renumber[m] = live
    answers[#answers + 1], answers[#answers + 2], answers[#answers + 3] = 'sent', sent, ''
  elseif sent.err then
    answers[#answers + 1], answers[#answers + 2], answers[#answers + 3] = 'refused', sent.err, ''
  else
    answers[#answers + 1], answers[#answers + 2], answers[#answers + 3] = 'again', sent[1], sent[2]
  end
end
if live == 0 then return answers end
-- DISPATCH's arguments: its jobs as they are, the accepted messages and their dispatches (renumbered) only.
local args = {now, now_iso, history, group, consumer, first, last, config_version, bell_cap, exec_prefix,
              rq_job_prefix, defs_prefix, run_prefix, outbox_cap, listened, direct, 0, n_jobs, live, 0}
for i = rest + 2 * nm, first_msg - 1 do args[#args + 1] = ARGV[i] end
for m = 1, nm do
  if renumber[m] then
    for i = first_msg + (m - 1) * 8, first_msg + m * 8 - 1 do args[#args + 1] = ARGV[i] end
  end
end
local kept = 0
for i = first_dispatch, #ARGV, 4 do
  local m = renumber[tonumber(ARGV[i])]
  if m then
    args[#args + 1], args[#args + 2], args[#args + 3], args[#args + 4] = m, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    kept = kept + 1
  end
end
args[20] = kept
dispatch({stream, paused_jobs, rq_queues, defs, defs_index, work, metrics, approvals, events, runs, outbox, accepted,
          unsettled}, args)
return answers

-- A worker's batch of ends whose only other write is the direct dispatch of the messages they send (a workflow's
-- step): DISPATCH (direct mode) then FINISH in one call, guarded as a lone FINISH is (finish.lua's `guard`): each
-- execution must still be in the worker's inflight list (claimed by it, not taken back by a janitor since), else
-- nothing is written and the call returns -1. One EVALSHA instead of WATCH, a guard EVAL, MULTI, DISPATCH's and
-- FINISH's texts and EXEC.
-- KEYS: inflight
-- ARGV: n_ids dispatch_keys dispatch_args finish_keys parts...
-- include: dispatch finish leave_inflight
-- parts: the batch's n_ids execution ids; then DISPATCH's dispatch_keys KEYS and dispatch_args ARGV; then FINISH's
-- finish_keys KEYS and the rest, its ARGV (its inflight '': the ids are out of the list already).
-- Returns FINISH's reply (the number of executions recorded), or -1.
-- A DISPATCH that fails (a key of the wrong type: corrupted data) has queued nothing (it queues last, and what it
-- writes after the queues cannot fail): the ends are not written either, their executions (still running under the
-- worker) go back to its inflight list, and the error is returned; the worker then records them one by one, fenced,
-- their messages through the stream. Out of the list, a worker killed before that would leave them running without
-- an owner.
local p = parts
if leave_inflight({inflight}, {'1', unpack(ARGV, p, p + tonumber(n_ids) - 1)}) == 0 then return -1 end
p = p + tonumber(n_ids)
local function slice(first, count)
  local out = {}
  for i = first, first + count - 1 do out[#out + 1] = ARGV[i] end
  return out
end
local dk, dn, fk = tonumber(dispatch_keys), tonumber(dispatch_args), tonumber(finish_keys)
local d_keys, d_args = slice(p, dk), slice(p + dk, dn)
p = p + dk + dn
-- DISPATCH leaves its runs' counts and fields to FINISH: one write of each run for both (dispatch.lua).
local done, handed = pcall(dispatch, d_keys, d_args, true)
if not done then
  redis.call('RPUSH', inflight, unpack(ARGV, parts, parts + tonumber(n_ids) - 1))
  return redis.error_reply('RECORD: ' .. tostring(type(handed) == 'table' and handed.err or handed))
end
return finish(slice(p, fk), slice(p + fk, #ARGV - p - fk + 1), handed)

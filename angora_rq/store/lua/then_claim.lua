-- A worker's batch of ends and its next claim in one call: FINISH (guarded, finish.lua's `guard`) or RECORD
-- (record.lua), then CLAIM (claim.lua), whatever the first answered. One EVALSHA where there were two in the same
-- round trip: a command fewer per batch, and the server sets up one script call instead of two.
-- KEYS:
-- ARGV: first first_keys first_args claim_keys parts...
-- include: finish record claim
-- first: 'finish' or 'record'; parts: its first_keys KEYS and first_args ARGV, then CLAIM's claim_keys KEYS and the
-- rest, CLAIM's ARGV.
-- Returns the first's reply (the number of executions recorded, or -1 when nothing was written because some
-- execution is no longer the worker's), then CLAIM's flat reply.
local function slice(from, count)
  local out = {}
  for i = from, from + count - 1 do out[#out + 1] = ARGV[i] end
  return out
end
local fk, fa, ck = tonumber(first_keys), tonumber(first_args), tonumber(claim_keys)
local p = parts
local ends = first == 'record' and record or finish
local done = ends(slice(p, fk), slice(p + fk, fa))
p = p + fk + fa
local got = claim(slice(p, ck), slice(p + ck, #ARGV - p - ck + 1))
table.insert(got, 1, done)
return got

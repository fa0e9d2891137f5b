"""Lua scripts for the steps that must be atomic on the server (loaded once per client)."""
from __future__ import annotations

import redis

# Accept a root message unless the stream is over its backlog budget; count it in its run, which is (again) live:
# the run indexes must look at it (runs unsettled: bump its change counter).
# KEYS: stream, run, runs, runs unsettled   ARGV: budget (0 = none), now, run_id, n_fields, field, value, ...,
#       topic, origin
SEND = """
local budget = tonumber(ARGV[1])
if budget > 0 and redis.call('XLEN', KEYS[1]) >= budget then
  return redis.error_reply('BACKLOG stream holds ' .. budget .. ' messages or more')
end
local n = tonumber(ARGV[4])
local fields = {}
for i = 1, n * 2 do fields[i] = ARGV[4 + i] end
local id = redis.call('XADD', KEYS[1], '*', unpack(fields))
redis.call('HINCRBY', KEYS[2], 'active', 1)
if redis.call('HSETNX', KEYS[2], 'created', ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], 'run_id', ARGV[3], 'topic', ARGV[5 + n * 2], 'origin', ARGV[6 + n * 2])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
end
redis.call('HINCRBY', KEYS[4], ARGV[3], 1)
return id
"""

# Claim up to N queued executions from the worker's queues into its inflight list and mark them running.
# KEYS: inflight list, paused-queues set
# ARGV: n, now, worker, host, rq_started_expiry, now_iso, exec_prefix, run_prefix, rqjob_prefix,
#       rqwip_prefix, slots_prefix, held_prefix, rqqueue_prefix, n_queues, queue..., rqcanceled_prefix,
#       rq_canceled_expiry
CLAIM = """
local n = tonumber(ARGV[1])
local nq = tonumber(ARGV[14])
local out, ids = {}, {}
for qi = 1, nq do
  local q = ARGV[14 + qi]
  if #ids >= n then break end
  if redis.call('SISMEMBER', KEYS[2], q) == 0 then
    local qkey = ARGV[13] .. q
    while #ids < n do
      local id = redis.call('LPOP', qkey)
      if not id then break end
      local ek = ARGV[7] .. id
      -- Everything the worker needs, in one read (the spec too: rarely wasted on a skipped execution).
      local e = redis.call('HMGET', ek, 'status', 'job', 'run', 'limit', 'spec', 'attempt', 'topic', 'params',
                           'queue', 'created')
      local run = ARGV[8] .. (e[3] or '')
      local limit = tonumber(e[4] or '0') or 0
      if e[1] ~= 'queued' then
        -- killed, canceled or expired while queued: nothing to run
      elseif redis.call('HGET', run, 'canceled') == '1' then
        redis.call('HSET', ek, 'status', 'canceled', 'ended', ARGV[2])
        redis.call('HSET', ARGV[9] .. id, 'status', 'canceled', 'ended_at', ARGV[6])
        redis.call('ZADD', ARGV[15 + nq] .. q, ARGV[16 + nq], id)
        redis.call('HSET', run, 's:' .. e[2], 'canceled')
        redis.call('HINCRBY', run, 'active', -1)
      elseif limit > 0 and redis.call('SCARD', ARGV[11] .. e[2]) >= limit then
        redis.call('HSET', ek, 'status', 'held')
        redis.call('HSET', run, 's:' .. e[2], 'held')
        redis.call('RPUSH', ARGV[12] .. e[2], id)
      else
        if limit > 0 then redis.call('SADD', ARGV[11] .. e[2], id) end
        redis.call('HSET', ek, 'status', 'running', 'started', ARGV[2], 'worker', ARGV[3], 'host', ARGV[4])
        redis.call('HSET', run, 's:' .. e[2], 'running')
        redis.call('HSET', ARGV[9] .. id, 'status', 'started', 'started_at', ARGV[6], 'worker_name', ARGV[3],
                   'last_heartbeat', ARGV[6])
        redis.call('ZADD', ARGV[10] .. q, ARGV[5], id .. ':' .. id)
        ids[#ids + 1] = id
        out[#out + 1] = id
        out[#out + 1] = e[5]
        out[#out + 1] = {e[3], e[6], e[7], e[8], e[9], e[10]}
      end
    end
  end
end
if #ids > 0 then redis.call('RPUSH', KEYS[1], unpack(ids)) end
return out
"""

# Move executions whose replay backoff is over into their RQ queues.
# KEYS: delayed zset, rq queues set   ARGV: now, limit, exec_prefix, rqjob_prefix, rqqueue_prefix
PROMOTE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  local ek = ARGV[3] .. id
  if redis.call('HGET', ek, 'status') == 'delayed' then
    local q = redis.call('HGET', ek, 'queue')
    redis.call('HSET', ek, 'status', 'queued', 'queued', ARGV[1])
    redis.call('HSET', ARGV[4] .. id, 'status', 'queued')
    redis.call('RPUSH', ARGV[5] .. q, id)
    redis.call('SADD', KEYS[2], ARGV[5] .. q)
  end
end
return #ids
"""

# Take the inflight executions of a worker whose heartbeat expired, once, into the orphans list.
# KEYS: alive key, inflight list, orphans list, workers set   ARGV: worker name
REAP = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local ids = redis.call('LRANGE', KEYS[2], 0, -1)
for _, id in ipairs(ids) do redis.call('RPUSH', KEYS[3], id) end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[4], ARGV[1])
return #ids
"""

# Free a concurrency slot and let the oldest held execution of that job go to its queue.
# KEYS: slots set, held list, rq queues set   ARGV: id, exec_prefix, rqjob_prefix, rqqueue_prefix, run_prefix
RELEASE = """
redis.call('SREM', KEYS[1], ARGV[1])
local nxt = redis.call('LPOP', KEYS[2])
if nxt then
  local ek = ARGV[2] .. nxt
  local e = redis.call('HMGET', ek, 'queue', 'run', 'job')
  redis.call('HSET', ek, 'status', 'queued')
  redis.call('HSET', ARGV[3] .. nxt, 'status', 'queued')
  redis.call('HSET', ARGV[5] .. e[2], 's:' .. e[3], 'queued')
  redis.call('LPUSH', ARGV[4] .. e[1], nxt)
  redis.call('SADD', KEYS[3], ARGV[4] .. e[1])
end
return nxt
"""

# Create one execution and its RQ job, queue (or delay) it, index it and count it in its run: the writes of
# State.create in one command (replays, manual runs; the matcher's batches use DISPATCH).
# Sent with EVAL, not EVALSHA: inside MULTI a NOSCRIPT (Redis restarted) would fail this command alone while
# the rest of the transaction (the XACK) went through; redis-py's EVALSHA pipelines also cost a SCRIPT EXISTS
# round trip per batch.
# KEYS: none (names come from Keys on the client, so keys.py stays the one place that builds them)
# ARGV: 1 exec key, 2 rq job key, 3 run key, 4 job execs zset, 5 run execs zset, 6 job stats hash, 7 rq queue,
#       8 bell list, 9 delayed zset, 10 rq queues set, 11 ttl, 12 history, 13 now, 14 id, 15 job, 16 run id,
#       17 status, 18 delay_until, 19 bell cap, 20 n exec fields, 21 n rq fields, exec pairs..., rq pairs...
CREATE = """
local ttl = tonumber(ARGV[11])
local ne, nr = tonumber(ARGV[20]), tonumber(ARGV[21])
local f = {}
for i = 1, ne * 2 do f[i] = ARGV[21 + i] end
redis.call('HSET', ARGV[1], unpack(f))
redis.call('EXPIRE', ARGV[1], ttl)
f = {}
for i = 1, nr * 2 do f[i] = ARGV[21 + ne * 2 + i] end
redis.call('HSET', ARGV[2], unpack(f))
redis.call('EXPIRE', ARGV[2], ttl)
local id, status = ARGV[14], ARGV[17]
if status == 'queued' then
  redis.call('RPUSH', ARGV[7], id)
  redis.call('SADD', ARGV[10], ARGV[7])
  redis.call('RPUSH', ARGV[8], 1)
  redis.call('LTRIM', ARGV[8], 0, tonumber(ARGV[19]) - 1)
elseif status == 'delayed' then
  redis.call('ZADD', ARGV[9], ARGV[18], id)
end
redis.call('ZADD', ARGV[4], ARGV[13], id)
redis.call('ZREMRANGEBYRANK', ARGV[4], 0, -(tonumber(ARGV[12]) + 1))
redis.call('ZADD', ARGV[5], ARGV[13], id)
redis.call('EXPIRE', ARGV[5], ttl)
redis.call('HSET', ARGV[6], 'last_execution', id, 'last_run', ARGV[16], 'last_status', 'queued')
redis.call('HINCRBY', ARGV[3], 'active', 1)
redis.call('HINCRBY', ARGV[3], 'n:' .. ARGV[15], 1)
redis.call('HSET', ARGV[3], 's:' .. ARGV[15], status, 'e:' .. ARGV[15], id)
redis.call('EXPIRE', ARGV[3], ttl)
return 1
"""

# Record a finished command: its execution, RQ job and registries, the run's job status and count, the job's
# stats. One command instead of twelve, for the same reason as CREATE.
# ARGV: 1 exec key, 2 rq job key, 3 run key, 4 job stats key, 5 worker inflight list ('' = none), 6 rq started
#       zset, 7 rq finished/failed zset, 8 ttl, 9 id, 10 status, 11 job, 12 ok ('1'/'0'), 13 rq status,
#       14 ended (RQ's format), 15 registry score, 16 started, 17 ended, 18 duration, 19 n exec fields, pairs...
FINISH = """
local ttl, id = tonumber(ARGV[8]), ARGV[9]
local n = tonumber(ARGV[19])
local f = {}
for i = 1, n * 2 do f[i] = ARGV[19 + i] end
redis.call('HSET', ARGV[1], unpack(f))
redis.call('EXPIRE', ARGV[1], ttl)
if ARGV[5] ~= '' then redis.call('LREM', ARGV[5], 1, id) end
redis.call('HSET', ARGV[2], 'status', ARGV[13], 'ended_at', ARGV[14])
redis.call('EXPIRE', ARGV[2], ttl)
redis.call('ZREM', ARGV[6], id .. ':' .. id)
redis.call('ZADD', ARGV[7], ARGV[15], id)
redis.call('HSET', ARGV[3], 's:' .. ARGV[11], ARGV[10])
redis.call('HINCRBY', ARGV[3], 'active', -1)
local ok = ARGV[12] == '1'
redis.call('HSET', ARGV[4], 'last_status', ok and 'succeeded' or 'failed', 'last_started', ARGV[16],
           'last_ended', ARGV[17], 'last_duration', ARGV[18])
redis.call('HINCRBY', ARGV[4], ok and 'succeeded' or 'failed', 1)
redis.call('HINCRBY', ARGV[4], 'total', 1)
return 1
"""

# An attempt that ended or was dropped settles the attempt it replays: that one stops showing `replaying` (a replay
# is scheduled) and shows `failed`. Sent only for attempts after the first.
# KEYS: this execution   ARGV: execution key prefix
SETTLE_REPLAYED = """
local prev = redis.call('HGET', KEYS[1], 'replay_of')
if prev and prev ~= '' then
  local pk = ARGV[1] .. prev
  if redis.call('HGET', pk, 'status') == 'replaying' then redis.call('HSET', pk, 'status', 'failed') end
end
return 1
"""

# Record what a settler (store/runindex.py) read of some unsettled runs, for each run only if nothing reopened it
# since the read (its change counter is still the one read): take it out of the finished-run indexes it is not in
# any more; a finished run goes into its status's index and leaves the unsettled hash; a run that is gone leaves it.
# ARGV: 1 unsettled hash, 2 n status indexes, status, key, ..., then per run: id, counter read, outcome
#   (a status with an index, 'live' or 'gone'), start time
# Returns how many runs left the unsettled hash.
SETTLE_RUNS = """
local unsettled, ns = ARGV[1], tonumber(ARGV[2])
local index = {}
for i = 1, ns do index[ARGV[1 + 2 * i]] = ARGV[2 + 2 * i] end
local settled = 0
for p = 3 + 2 * ns, #ARGV, 4 do
  local id, seen, outcome, created = ARGV[p], ARGV[p + 1], ARGV[p + 2], ARGV[p + 3]
  if (redis.call('HGET', unsettled, id) or '') == seen then
    for status, key in pairs(index) do
      if status ~= outcome then redis.call('ZREM', key, id) end
    end
    if index[outcome] then redis.call('ZADD', index[outcome], created, id) end
    if outcome ~= 'live' then
      redis.call('HDEL', unsettled, id)
      settled = settled + 1
    end
  end
end
return settled
"""

# Where some runs stand, for the run indexes (store/runindex.py): per run {created, active, canceled, started}.
# `started` ('1' or '0', only in mode 'status') says whether any of its `s:<job>` fields holds a status outside the
# waiting ones given (core/runs.WAITING): all core/runs.summarize needs to tell a queued run from a running one,
# without sending the run's fields (hundreds, with a big plan) back.
# ARGV: mode ('brief' or 'status'), n waiting statuses, status..., then run keys (names come from Keys)
RUN_STATES = """
local mode, nw = ARGV[1], tonumber(ARGV[2])
local waiting = {}
for i = 1, nw do waiting[ARGV[2 + i]] = true end
local out = {}
for i = 3 + nw, #ARGV do
  local key = ARGV[i]
  local row = redis.call('HMGET', key, 'created', 'active', 'canceled')
  local started = ''
  if mode == 'status' and row[1] and tonumber(row[2] or '0') > 0 then
    started = '0'
    local h = redis.call('HGETALL', key)
    for j = 1, #h, 2 do
      if h[j]:sub(1, 2) == 's:' and not waiting[h[j + 1]] then
        started = '1'
        break
      end
    end
  end
  out[#out + 1] = {row[1] or '', row[2] or '', row[3] or '', started}
end
return out
"""

# The pre-read of a matcher batch: what Python needs to plan it (run plans, and the statuses a join waits on).
# ARGV: n runs, then per run: key, mode ('plan' = the plan field only, 'all' = the whole hash)
READ_RUNS = """
local out = {}
for i = 1, tonumber(ARGV[1]) do
  local key, mode = ARGV[2 * i], ARGV[2 * i + 1]
  if mode == 'all' then
    out[i] = redis.call('HGETALL', key)
  else
    local plan = redis.call('HGET', key, 'plan')
    out[i] = plan and {'plan', plan} or {}
  end
end
return out
"""

# A whole matcher batch in one call: for each (message, job) whose guard is free (SET NX, so no WATCH), create
# the execution and its RQ job as State.create/CREATE do, queue it (or hold it if its job is paused), index it
# and count it in its run; record the root messages' plans; ring each queue's bell once; XACK every entry.
# Atomic, so a killed matcher either did all of it or nothing (its entries stay pending and are claimed).
# Values shared by many executions (a job's spec and RQ fields, the batch's time) travel once per batch: the
# per-argument cost of the client, not Redis, was most of a dispatch.
# ARGV header: 1 now, 2 now (RQ's format), 3 ttl, 4 history, 5 guard ttl, 6 config version, 7 bell cap,
#   8 exec key prefix, 9 rq job key prefix, 10 stream, 11 group, 12 paused jobs set, 13 rq queues set,
#   14 rq data head, 15 rq data tail, 16 n jobs, 17 n messages, 18 n dispatches, then
#   per job (11 + 2n): name, queue, spec, limit, stats key, execs key, rq queue key, bell key, paused-held list,
#     n rq fields, rq field pairs (created_at, enqueued_at, data, description and status are set per execution)
#   per message (8): entry, run id, topic, origin, params, run key, run execs key, plan: '' (not a root message),
#     '=' .. JSON (the caller read and merged the run's plan: write it) or '?' .. JSON (write it unless the run
#     already has another plan: then leave it and return the old one for the caller to merge, see SET_PLAN)
# Returns: {executions created, message number, old plan, ...}
#   per dispatch (4): message number, job number, execution id, guard key
DISPATCH = """
local now, iso, ttl, history = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local guard_ttl, version, bell_cap = tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7])
local nj, nm, nd = tonumber(ARGV[16]), tonumber(ARGV[17]), tonumber(ARGV[18])
local p = 19
local jobs = {}
for j = 1, nj do
  local job = {name = ARGV[p], queue = ARGV[p + 1], spec = ARGV[p + 2], limit = ARGV[p + 3], stats = ARGV[p + 4],
               execs = ARGV[p + 5], qkey = ARGV[p + 6], bell = ARGV[p + 7], held = ARGV[p + 8], rq = {}, at = {},
               n = 0, scores = {}}
  local nrq = tonumber(ARGV[p + 9])
  for i = 1, nrq * 2 do job.rq[i] = ARGV[p + 9 + i] end
  for i = 1, nrq * 2, 2 do job.at[job.rq[i]] = i + 1 end
  job.paused = redis.call('SISMEMBER', ARGV[12], job.name) == 1
  jobs[j] = job
  p = p + 10 + nrq * 2
end
local msgs, entries, conflicts = {}, {}, {}
for m = 1, nm do
  msgs[m] = {entry = ARGV[p], run = ARGV[p + 1], topic = ARGV[p + 2], origin = ARGV[p + 3], params = ARGV[p + 4],
             rkey = ARGV[p + 5], rexecs = ARGV[p + 6], absorbed = false}
  entries[m] = ARGV[p]
  local plan = ARGV[p + 7]
  if plan ~= '' then
    local old = plan:sub(1, 1) == '?' and redis.call('HGET', ARGV[p + 5], 'plan')
    plan = plan:sub(2)
    if old and old ~= plan then
      conflicts[#conflicts + 1] = m
      conflicts[#conflicts + 1] = old
    else
      redis.call('HSET', ARGV[p + 5], 'plan', plan, 'config_version', version, 'params', ARGV[p + 4])
    end
  end
  p = p + 8
end
local canceled, bells, touched, created, queued, queues = {}, {}, {}, 0, {}, {}
for d = 1, nd do
  local msg, job = msgs[tonumber(ARGV[p])], jobs[tonumber(ARGV[p + 1])]
  local id, guard = ARGV[p + 2], ARGV[p + 3]
  p = p + 4
  if canceled[msg.rkey] == nil then canceled[msg.rkey] = redis.call('HGET', msg.rkey, 'canceled') == '1' end
  if not canceled[msg.rkey] and (guard == '' or redis.call('SET', guard, 1, 'NX', 'EX', guard_ttl)) then
    local status = job.paused and 'held' or 'queued'
    local ek = ARGV[8] .. id
    redis.call('HSET', ek, 'id', id, 'job', job.name, 'run', msg.run, 'attempt', 1, 'status', status,
               'queue', job.queue, 'topic', msg.topic, 'entry', msg.entry, 'origin', msg.origin,
               'params', msg.params, 'spec', job.spec, 'config_version', version, 'created', now, 'queued', now,
               'replay_of', '', 'delay_until', '', 'limit', job.limit)
    redis.call('EXPIRE', ek, ttl)
    local rq, at = job.rq, job.at
    rq[at.created_at], rq[at.enqueued_at] = iso, iso
    rq[at.data] = ARGV[14] .. id .. ARGV[15]
    rq[at.description] = job.name .. ' (run ' .. msg.run .. ', attempt 1)'
    rq[at.status] = job.paused and 'deferred' or 'queued'
    redis.call('HSET', ARGV[9] .. id, unpack(rq))
    redis.call('EXPIRE', ARGV[9] .. id, ttl)
    if job.paused then
      redis.call('RPUSH', job.held, id)
    else
      -- Queued at the end, in this order, one RPUSH per queue.
      local q = queued[job.qkey]
      if not q then
        q = {}
        queued[job.qkey] = q
        queues[#queues + 1] = job.qkey
        bells[job.bell] = 0
      end
      q[#q + 1] = id
      bells[job.bell] = bells[job.bell] + 1
    end
    job.scores[#job.scores + 1] = now
    job.scores[#job.scores + 1] = id
    job.n, job.last, job.run = job.n + 1, id, msg.run
    redis.call('ZADD', msg.rexecs, now, id)
    -- The message's first execution takes over its count in the run; every further one adds one.
    if msg.absorbed then redis.call('HINCRBY', msg.rkey, 'active', 1) end
    msg.absorbed = true
    redis.call('HINCRBY', msg.rkey, 'n:' .. job.name, 1)
    redis.call('HSET', msg.rkey, 's:' .. job.name, status, 'e:' .. job.name, id)
    touched[msg.rkey] = msg.rexecs
    created = created + 1
  end
end
for m = 1, nm do
  -- A message that started nothing stops counting in its run.
  if not msgs[m].absorbed then redis.call('HINCRBY', msgs[m].rkey, 'active', -1) end
end
for rkey, rexecs in pairs(touched) do
  redis.call('EXPIRE', rkey, ttl)
  redis.call('EXPIRE', rexecs, ttl)
end
for _, qkey in ipairs(queues) do
  local ids = queued[qkey]
  for i = 1, #ids, 1000 do  -- unpack() is limited to a few thousand values
    redis.call('RPUSH', qkey, unpack(ids, i, math.min(i + 999, #ids)))
  end
  redis.call('SADD', ARGV[13], qkey)
end
for _, job in ipairs(jobs) do
  if job.n > 0 then
    redis.call('ZADD', job.execs, unpack(job.scores))
    redis.call('ZREMRANGEBYRANK', job.execs, 0, -(history + 1))
    redis.call('HSET', job.stats, 'last_execution', job.last, 'last_run', job.run, 'last_status', 'queued')
  end
end
for bell, n in pairs(bells) do
  local ones = {}
  for i = 1, math.min(n, bell_cap) do ones[i] = 1 end
  redis.call('RPUSH', bell, unpack(ones))
  redis.call('LTRIM', bell, 0, bell_cap - 1)
end
redis.call('XACK', ARGV[10], ARGV[11], unpack(entries))
return {created, unpack(conflicts)}
"""

# Record a run's merged plan unless it changed since it was read (then return the current one to merge again).
# KEYS: run   ARGV: plan read, merged plan, config version, params
SET_PLAN = """
local cur = redis.call('HGET', KEYS[1], 'plan')
if cur and cur ~= ARGV[1] then return cur end
redis.call('HSET', KEYS[1], 'plan', ARGV[2], 'config_version', ARGV[3], 'params', ARGV[4])
return false
"""


class Scripts:
    """The scripts registered on one client (EVALSHA, reloaded transparently by redis-py)."""

    def __init__(self, r: redis.Redis) -> None:
        self.send = r.register_script(SEND)
        self.claim = r.register_script(CLAIM)
        self.promote = r.register_script(PROMOTE)
        self.reap = r.register_script(REAP)
        self.release = r.register_script(RELEASE)
        self.read_runs = r.register_script(READ_RUNS)
        self.dispatch = r.register_script(DISPATCH)
        self.set_plan = r.register_script(SET_PLAN)


_shared: Scripts | None = None


def shared_scripts() -> Scripts:
    """One Scripts for callers that run them through a Link (which needs only their text and SHA).

    Registering hashes every script (~200 us); the client they are registered on is never used to connect.
    """
    global _shared
    if _shared is None:
        _shared = Scripts(redis.Redis())
    return _shared

-- Writes that a key of the wrong type (corrupted data: something else wrote to Angora's keys) does not stop, for the
-- scripts that must not stop halfway once they have written what a retry would repeat (`-- lib: skip_wrongtype`):
-- `w(...)` is redis.pcall(...), its WRONGTYPE error noted in `wrongtype` and the script going on; `note(err)` does
-- the same with the error a pcall() of an included script caught. Any other error raises as redis.call does (a
-- Redis refusing writes: out of memory, a failing disk, missing replicas, a replica; it refuses the first write,
-- before anything is written): `w` sends the command again with redis.call (it changed nothing the first time).
local wrongtype = {}
local function note(err)
  local text = type(err) == 'table' and tostring(err.err) or tostring(err)
  if not string.find(text, 'WRONGTYPE', 1, true) then error(err, 0) end
  wrongtype[#wrongtype + 1] = text
end
local function w(...)
  local reply = redis.pcall(...)
  if type(reply) == 'table' and reply.err then
    if not string.find(tostring(reply.err), 'WRONGTYPE', 1, true) then return redis.call(...) end
    note(reply.err)
  end
  return reply
end

-- Keep, on an execution, the end its worker reported after someone else had recorded or replayed it: refused,
-- never applied (status, counters and messages stay the ones recorded), but not lost from sight.
-- KEYS: exec
-- ARGV: late worker ended
-- late: JSON of the refused end; worker, ended: its worker and end time as FINISH records them: an execution that
-- holds this very end (recorded by this worker, whose reply or confirmation was lost) has nothing late.
-- Returns 1 when noted, 0 when the end is the one recorded or the execution no longer exists (nothing is created).
if redis.call('EXISTS', exec) == 0 then return 0 end
local e = redis.call('HMGET', exec, EXEC.worker, EXEC.ended)
if e[1] == worker and e[2] == ended then return 0 end
redis.call('HSET', exec, EXEC.late, late)
return 1

-- success.lua: the slim path of one success of a healthy target (immediate mode).
--
-- Standalone: loaded without the common.lua prelude, so a healthy success costs Redis
-- little more than one read and one write.
-- KEYS: KEYS[1], the target hash <prefix>:{<provider>}:t:<model> (the only key touched).
-- ARGV: SUCCESS_FIELDS below (the same tuple as resilience._wire.SUCCESS_FIELDS):
--   window_ms  length of the failure-rate window (ms)
-- Returns: now_ms (the server's time, ms) when the success was recorded here; 0 when the
--   target is not plainly healthy (unknown, not closed, errors consecutive, its first
--   success, or a new failure-rate bucket): the caller then runs record.lua, which handles
--   everything. An integer, not a table: a table reply costs Redis a tenth of the call.
-- Atomic: one read of the fields a healthy success needs and one write of the counters in
--   one script, against the same state every other script sees. Time comes from the server
--   (TIME). It writes no index, event, announcement or latency average, and keeps the TTL
--   the key has (HSET does not clear it): record.lua refreshes all of them at least once
--   per failure-rate window, when the bucket changes and this script hands over.

local SUCCESS_FIELDS = {'window_ms'}

local f = redis.call('HMGET', KEYS[1], 'state', 'consecutive_errors', 'wb', 'success_count',
  'wt')
local successes = tonumber(f[4])
if (f[1] and f[1] ~= 'closed') or (f[2] and f[2] ~= '0') or not successes
    or successes < 1 then
  return 0
end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
if tonumber(f[3]) ~= math.floor(now / ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'success_count', successes + 1, 'wt', (tonumber(f[5]) or 0) + 1,
  'last_success_time', now)
return now

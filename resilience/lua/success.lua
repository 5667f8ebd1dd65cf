-- success.lua: the slim path of one success of a healthy target (immediate mode).
--
-- KEYS: see common.lua; only KEYS[1], the target hash, is touched.
-- ARGV: the configuration block, provider and model (common.lua), then in ARGV[4]
--   SUCCESS_FIELDS below (the same tuple as resilience._wire.SUCCESS_FIELDS):
--   latency_ms  duration of the call (ms; '' unknown)
-- Returns: {1, generation, now_ms} when the success was recorded here; {0} when the target is
--   not plainly healthy (unknown, not closed, errors consecutive, its first success, or a
--   new failure-rate bucket): the caller then runs record.lua, which handles everything.
-- Atomic: one read of five fields and one write of the counters in one script, against the
--   same state every other script sees. Reads only what a healthy target needs, and writes
--   no index, event or announcement (record.lua refreshes the index at least once per
--   failure-rate window, when the bucket changes).

local SUCCESS_FIELDS = {'latency_ms'}

local A = args(SUCCESS_FIELDS)
local f = redis.call('HMGET', TKEY, 'state', 'consecutive_errors', 'wb', 'success_count',
  'gen', 'latency_ms')
local bucket = math.floor(NOW / CFG.window_ms)
if (f[1] ~= false and f[1] ~= 'closed') or (tonumber(f[2]) or 0) > 0
    or tonumber(f[3]) ~= bucket or (tonumber(f[4]) or 0) < 1 then
  return {0}
end
local h, hc = {latency_ms = f[6]}, {}
add_latency(h, hc, tonumber(A.latency_ms))
if hc['latency_ms'] then
  redis.call('HSET', TKEY, 'last_success_time', NOW, 'latency_ms', h['latency_ms'])
else
  redis.call('HSET', TKEY, 'last_success_time', NOW)
end
redis.call('HINCRBY', TKEY, 'success_count', 1)
redis.call('HINCRBY', TKEY, 'wt', 1)
redis.call('PEXPIRE', TKEY, CFG.state_ttl_ms)
return {1, tonumber(f[5]) or 0, NOW}

-- common.lua: shared prelude, prepended to every state-changing script when it is loaded.
--
-- KEYS (the same for every script, all under one hash tag {<encoded provider>}):
--   KEYS[1] target hash    <prefix>:{<provider>}:t:<model>
--   KEYS[2] provider hash  <prefix>:{<provider>}:p
--   KEYS[3] index zset     <prefix>:{<provider>}:idx   (member: encoded model, score: last write ms)
--   KEYS[4] event stream   <prefix>:{<provider>}:ev    (capped transition log)
--   KEYS[5] event counter  <prefix>:{<provider>}:evn   (number of the last event logged)
-- ARGV[1..18] configuration block (built once per Settings by resilience._core):
--   1 failure_threshold          2 window_ms              3 failure_rate_threshold (0-1]
--   4 min_calls                  5 model_not_found_threshold
--   6 open_ms                    7 backoff_factor         8 max_open_ms
--   9 jitter (fraction 0-0.2)   10 model_not_found_open_ms
--  11 provider_block_ms         12 rate_limit_default_ms 13 max_retry_after_ms
--  14 half_open_successes       15 probe_lease_ms        16 state_ttl_ms
--  17 events_max_len            18 pub/sub channel
-- ARGV[19] encoded provider, ARGV[20] encoded model; script-specific ARGV follow from 21.
--
-- Time comes only from the server (TIME), never from clients. The scripts use no
-- math.random: jitter and probe tokens come from the caller as ARGV.

local CFG = {
  threshold = tonumber(ARGV[1]),
  window_ms = tonumber(ARGV[2]),
  rate = tonumber(ARGV[3]),
  min_calls = tonumber(ARGV[4]),
  mnf_threshold = tonumber(ARGV[5]),
  open_ms = tonumber(ARGV[6]),
  factor = tonumber(ARGV[7]),
  max_open_ms = tonumber(ARGV[8]),
  jitter = tonumber(ARGV[9]),
  mnf_open_ms = tonumber(ARGV[10]),
  provider_block_ms = tonumber(ARGV[11]),
  rate_default_ms = tonumber(ARGV[12]),
  max_retry_ms = tonumber(ARGV[13]),
  half_open_successes = tonumber(ARGV[14]),
  lease_ms = tonumber(ARGV[15]),
  ttl_ms = tonumber(ARGV[16]),
  events_max = tonumber(ARGV[17]),
  channel = ARGV[18],
}
local PROVIDER = ARGV[19]
local MODEL = ARGV[20]
local TKEY, PKEY, IDX, EV, EVN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NOW = now_ms()

local function load(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end

local function num(h, field)
  return tonumber(h[field] or '0') or 0
end

local function str(h, field)
  return h[field] or ''
end

local function state_of(h)
  local s = h['state']
  if s == nil or s == '' then return 'closed' end
  return s
end

-- Exponential break for the n-th trip: open_ms * factor^(n-1), capped, then spread by
-- +-jitter (r is the caller's random number in [-1, 1]). The cap is applied after the
-- jitter so no break ever exceeds max_open_ms.
local function backoff_ms(trips, r)
  local d = CFG.open_ms * (CFG.factor ^ (math.max(trips, 1) - 1))
  if d > CFG.max_open_ms then d = CFG.max_open_ms end
  d = d * (1 + CFG.jitter * r)
  if d > CFG.max_open_ms then d = CFG.max_open_ms end
  if d < 1 then d = 1 end
  return math.floor(d)
end

-- Writes the changed fields of h back (HSET only what changed) and refreshes the TTL:
-- the state TTL plus whatever is left of a break, so a long block outlives idleness.
local function save(key, h, changed)
  local args = {}
  for field, _ in pairs(changed) do
    args[#args + 1] = field
    args[#args + 1] = tostring(h[field] or '')
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
  local ttl = CFG.ttl_ms + math.max(0, num(h, 'open_until') - NOW)
  redis.call('PEXPIRE', key, ttl)
end

-- Records a field change; a value equal to the stored one is not written again.
local function set(h, changed, field, value)
  local old = h[field]
  if old ~= nil and tostring(old) == tostring(value) then return end
  h[field] = value
  changed[field] = true
end

-- Keeps the model in the provider's index. Members idle longer than any key can live are
-- pruned when a new member arrives (the only time the index grows).
local function touch_index()
  if redis.call('ZADD', IDX, NOW, MODEL) == 1 then
    redis.call('ZREMRANGEBYSCORE', IDX, '-inf', NOW - CFG.ttl_ms - CFG.max_retry_ms)
  end
  redis.call('PEXPIRE', IDX, CFG.ttl_ms + CFG.max_retry_ms)
end

-- A new entry remembers when it started (counter resets show as a new 'since') and its
-- own encoded names, so a hash read alone tells what it is.
local function init_target(h, changed)
  if h['since'] == nil then
    set(h, changed, 'since', NOW)
    set(h, changed, 'provider', PROVIDER)
    set(h, changed, 'model', MODEL)
    set(h, changed, 'state', 'closed')
    set(h, changed, 'gen', 0)
  end
end

local function init_provider(p, changed)
  if p['since'] == nil then
    set(p, changed, 'since', NOW)
    set(p, changed, 'state', 'closed')
    set(p, changed, 'gen', 0)
  end
end

-- Appends one transition to the capped log and announces it on the channel. model is ''
-- for a provider-wide transition. Only the script run that made the transition calls this,
-- so each transition is logged and announced exactly once.
-- Each entry carries its number 'n' (1, 2, 3, ... per provider): a reader that finds a gap
-- after the last number it copied knows the cap dropped events before it read them.
local function transition(model, from, to, kind, reason, gen, open_until)
  local n = redis.call('INCR', EVN)
  redis.call('XADD', EV, 'MAXLEN', '~', CFG.events_max, '*',
    'm', model, 'f', from, 't', to, 'k', kind, 'r', reason, 'g', gen,
    'ou', open_until, 'ts', NOW, 'n', n)
  redis.call('PEXPIRE', EV, CFG.ttl_ms + CFG.max_retry_ms)
  redis.call('PEXPIRE', EVN, CFG.ttl_ms + CFG.max_retry_ms)
end

-- Pub/sub message that keeps every worker's local view current:
-- scope, provider, model, state, generation, open_until_ms, now_ms, hot, hint
local function announce(scope, h)
  local hot, model = 0, MODEL
  if num(h, 'consecutive_errors') > 0 then hot = 1 end
  if scope == 'p' then model = '' end
  redis.call('PUBLISH', CFG.channel, table.concat({
    scope, PROVIDER, model, state_of(h), num(h, 'gen'), num(h, 'open_until'), NOW, hot,
    str(h, 'endpoint_hint')}, '\t'))
end

-- The reply every state-changing script returns (parsed by resilience._core.parse_view):
--  1 code (script-specific)      2 target state        3 target generation
--  4 target open_until_ms (0)    5 server now_ms       6 hot (1 while errors are consecutive)
--  7 provider state              8 provider open_until_ms (0)
--  9 endpoint hint ('')         10 probe token granted ('')
-- 11 target transition ('' or 'from>to')               12 provider transition ('' or 'from>to')
-- 13 first success (0/1)        14 error_count         15 consecutive_errors
-- 16 reason ('')                17 provider generation 18 provider reason ('')
local function view(code, h, p, token, ttrans, ptrans, first)
  local hot = 0
  if num(h, 'consecutive_errors') > 0 then hot = 1 end
  return {code, state_of(h), num(h, 'gen'), num(h, 'open_until'), NOW, hot,
    state_of(p), num(p, 'open_until'), str(h, 'endpoint_hint'), token or '',
    ttrans or '', ptrans or '', first or 0, num(h, 'error_count'),
    num(h, 'consecutive_errors'), str(h, 'reason'), num(p, 'gen'), str(p, 'reason')}
end

-- common.lua: shared prelude, prepended to every state-changing script when it is loaded.
-- The state machine it serves is documented in docs/state-machine.md (transition table and
-- a dictionary of every hash field); resilience/_machine.py is its in-process twin.
--
-- KEYS (the same for every script, all under one hash tag {<encoded provider>}):
--   KEYS[1] target hash    <prefix>:{<provider>}:t:<model>
--   KEYS[2] provider hash  <prefix>:{<provider>}:p
--   KEYS[3] index zset     <prefix>:{<provider>}:idx   (member: encoded model, score: last write ms)
--   KEYS[4] event stream   <prefix>:{<provider>}:ev    (capped transition log)
--   KEYS[5] event counter  <prefix>:{<provider>}:evn   (number of the last event logged)
-- ARGV (four strings, so a call costs the client and the server little to encode):
--   ARGV[1] the configuration block: the fields of CONFIG_FIELDS below (the same tuple as
--           resilience._wire.CONFIG_FIELDS; a test keeps them equal), joined by tabs.
--           Durations are in ms: window_ms, open_ms, max_open_ms, probe_lease_ms,
--           state_ttl_ms, max_retry_ms, flap_window_ms (0 = no flap rule),
--           retry_floor_ms; failure_rate_threshold is a fraction (0-1], backoff_factor and
--           flap_factor multipliers, jitter a fraction (0-0.2), min_calls /
--           half_open_successes / events_max_len counts, channel the pub/sub name.
--   ARGV[2] the encoded provider, ARGV[3] the encoded model ('' for a provider-wide admin
--           operation).
--   ARGV[4] the script's own arguments (its header names them), joined by the unit
--           separator \31 (free text arrives cleaned of control characters).
--
-- Time comes only from the server (TIME), never from clients. The scripts use no
-- math.random: jitter and probe tokens come from the caller as ARGV.
-- No kind names are compared here: the caller sends the policy row of the kind it records
-- (resilience._policy), so the rules live once, in Python, as data.

local CONFIG_FIELDS = {'window_ms', 'failure_rate_threshold', 'min_calls', 'open_ms',
  'backoff_factor', 'max_open_ms', 'jitter', 'half_open_successes', 'probe_lease_ms',
  'state_ttl_ms', 'max_retry_ms', 'events_max_len', 'flap_window_ms', 'flap_factor',
  'retry_floor_ms', 'channel'}

-- The fields of s separated by the one-character sep, empty fields kept.
local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if i == nil then
      out[#out + 1] = string.sub(s, start)
      return out
    end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end

-- split(s, sep) for s of n fields (sep a character no pattern treats as magic): one
-- string.match, half the work of split's loop; split itself when s has more or fewer.
local function fields_of(s, sep, n)
  local field = '([^' .. sep .. ']*)'
  local out = {string.match(s, '^' .. string.rep(field .. sep, n - 1) .. field .. '$')}
  if #out < n then return split(s, sep) end
  return out
end

-- The configuration block is read on first use, each value when first asked for: an
-- admission of a closed target needs none of it, a failure that trips nothing five of the
-- sixteen (a string-to-number conversion each; converting all of them every run was a
-- third of the Redis time of an admission).
local config_raw
local CFG = setmetatable({}, {__index = function(cfg, name)
  config_raw = config_raw or fields_of(ARGV[1], '\t', #CONFIG_FIELDS)
  for i, field in ipairs(CONFIG_FIELDS) do
    if field == name then
      local value = config_raw[i]
      if name ~= 'channel' then value = tonumber(value) end
      rawset(cfg, name, value)
      return value
    end
  end
  return nil
end})
local PROVIDER = ARGV[2]
local MODEL = ARGV[3]
local TKEY, PKEY, IDX, EV, EVN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]

-- Reads the script's own arguments (ARGV[4]) into a table, by the names of its fields.
local function args(fields)
  local values, a = fields_of(ARGV[4] or '', '\31', #fields), {}
  for i, name in ipairs(fields) do a[name] = values[i] or '' end
  return a
end

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

-- Only the named fields of a hash (absent ones stay nil): cheaper than HGETALL when a script
-- needs a few of many.
local function load_fields(key, fields)
  local values, h = redis.call('HMGET', key, unpack(fields)), {}
  for i, name in ipairs(fields) do
    if values[i] then h[name] = values[i] end
  end
  return h
end

local function num(h, field)
  return tonumber(h[field] or '0') or 0
end

local function str(h, field)
  return h[field] or ''
end

-- A positive, finite number of milliseconds, or nil (for '', 'nan', 'inf', '-1', 'abc').
local function positive_ms(text)
  local v = tonumber(text)
  if v == nil or v ~= v or v <= 0 or v == math.huge then return nil end
  return v
end

local function state_of(h)
  local s = h['state']
  if s == nil or s == '' then return 'closed' end
  return s
end

-- The computed break: open_ms x backoff_factor^reopens x flap_factor^flaps (failed probes
-- and flaps in a row), capped, then spread by +-jitter (r is the caller's random number in
-- [-1, 1]). The cap is applied after the jitter so no break ever exceeds max_open_ms.
local function backoff_ms(reopens, flaps, r)
  local d = CFG.open_ms * (CFG.backoff_factor ^ reopens) * (CFG.flap_factor ^ flaps)
  if d > CFG.max_open_ms then d = CFG.max_open_ms end
  d = d * (1 + CFG.jitter * r)
  if d > CFG.max_open_ms then d = CFG.max_open_ms end
  if d < 1 then d = 1 end
  return math.floor(d)
end

-- A Retry-After in ms, capped at max_retry_ms, or default_ms when none is usable.
local function capped_retry(retry_ms, default_ms)
  local d = retry_ms or default_ms
  if d > CFG.max_retry_ms then d = CFG.max_retry_ms end
  if d < 1 then d = 1 end
  return math.floor(d)
end

-- Writes the changed fields of h back (HSET only what changed) and refreshes the TTL:
-- the state TTL plus whatever is left of a break, so a long block outlives idleness.
local function save(key, h, changed)
  local flat = {}
  for field, text in pairs(changed) do
    flat[#flat + 1] = field
    flat[#flat + 1] = text
  end
  if #flat > 0 then redis.call('HSET', key, unpack(flat)) end
  redis.call('PEXPIRE', key, CFG.state_ttl_ms + math.max(0, num(h, 'open_until') - NOW))
end

-- Records a field change; a value equal to the stored one is not written again. changed
-- keeps the text to write (a number is formatted once, not again by save).
local function set(h, changed, field, value)
  local old, text = h[field], tostring(value or '')
  if old ~= nil and tostring(old) == text then return end
  h[field] = value
  changed[field] = text
end

-- Keeps a model (default: this call's) in the provider's index. Members idle longer than any
-- key can live are pruned when a new member arrives (the only time the index grows).
local function touch_index(model)
  if redis.call('ZADD', IDX, NOW, model or MODEL) == 1 then
    redis.call('ZREMRANGEBYSCORE', IDX, '-inf', NOW - CFG.state_ttl_ms - CFG.max_retry_ms)
  end
  redis.call('PEXPIRE', IDX, CFG.state_ttl_ms + CFG.max_retry_ms)
end

-- A new entry remembers when it started (counter resets show as a new 'since') and its
-- own encoded names, so a hash read alone tells what it is.
local function init_target(h, changed, model)
  if h['since'] == nil then
    set(h, changed, 'since', NOW)
    set(h, changed, 'provider', PROVIDER)
    set(h, changed, 'model', model or MODEL)
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

-- Clears a probe lease (and, for a target, the probe successes counted under it).
local function clear_lease(h, changed)
  set(h, changed, 'lease', '')
  set(h, changed, 'lease_until', 0)
end

-- Sliding window of two fixed buckets: the previous bucket's counts weigh by how much of
-- it still overlaps the window ending now. Returns that weight.
local function roll_window(h, changed)
  local bucket = math.floor(NOW / CFG.window_ms)
  local wb = num(h, 'wb')
  if bucket ~= wb then
    if bucket == wb + 1 then
      set(h, changed, 'pf', num(h, 'wf'))
      set(h, changed, 'pt', num(h, 'wt'))
    else
      set(h, changed, 'pf', 0)
      set(h, changed, 'pt', 0)
    end
    set(h, changed, 'wf', 0)
    set(h, changed, 'wt', 0)
    set(h, changed, 'wb', bucket)
  end
  return 1 - (NOW - bucket * CFG.window_ms) / CFG.window_ms
end

-- The moving average of success latency (ms; the newest weighs 0.2).
local function add_latency(h, changed, latency)
  if latency ~= nil and latency == latency and latency >= 0 and latency < math.huge then
    local prev = tonumber(h['latency_ms']) or latency
    set(h, changed, 'latency_ms', math.floor(prev * 0.8 + latency * 0.2 + 0.5))
  end
end

-- Appends one transition to the capped log. model is '' for a provider-wide transition.
-- Only the script run that made the transition calls this, so each transition is logged
-- exactly once. Each entry carries its number 'n' (1, 2, 3, ... per provider): a reader
-- that finds a gap after the last number it copied knows the cap dropped events.
local function log_transition(model, from, to, kind, reason, gen, open_until)
  local n = redis.call('INCR', EVN)
  redis.call('XADD', EV, 'MAXLEN', '~', CFG.events_max_len, '*',
    'm', model, 'f', from, 't', to, 'k', kind, 'r', reason, 'g', gen,
    'ou', open_until, 'ts', NOW, 'n', n)
  redis.call('PEXPIRE', EV, CFG.state_ttl_ms + CFG.max_retry_ms)
  redis.call('PEXPIRE', EVN, CFG.state_ttl_ms + CFG.max_retry_ms)
end

-- Pub/sub message that keeps every worker's local view current (tab-separated):
-- scope ('t'/'p'), provider, model, state, generation, open_until_ms, now_ms, hot, hint
local function announce(scope, h)
  local hot, model = 0, MODEL
  if num(h, 'consecutive_errors') > 0 then hot = 1 end
  if scope == 'p' then model = '' end
  redis.call('PUBLISH', CFG.channel, table.concat({
    scope, PROVIDER, model, state_of(h), num(h, 'gen'), num(h, 'open_until'), NOW, hot,
    str(h, 'endpoint_hint'), str(h, 'compat')}, '\t'))
end

-- The reply of every state-changing script, in the order of REPLY_FIELDS (the same tuple as
-- resilience._wire.REPLY_FIELDS): code is script-specific; transition and
-- provider_transition are '' or 'from>to' for a transition this run made (so exactly one
-- caller learns of each); hot is 1 while errors are consecutive; times are ms since the epoch
-- (0 = none); token is the probe lease granted ('' none); compat the learned compatibility
-- hints (space-separated, each encoded by resilience.CompatHint.encode).
local REPLY_FIELDS = {'code', 'state', 'generation', 'open_until_ms', 'now_ms', 'hot',
  'provider_state', 'provider_until_ms', 'hint', 'token', 'transition',
  'provider_transition', 'first_success', 'error_count', 'consecutive_errors', 'reason',
  'provider_generation', 'provider_reason', 'compat'}

local function reply(code, h, p, token, ttrans, ptrans, first)
  local hot = 0
  if num(h, 'consecutive_errors') > 0 then hot = 1 end
  -- One constructor in the order of REPLY_FIELDS (no table of names to fill and copy).
  return {code, state_of(h), num(h, 'gen'), num(h, 'open_until'), NOW, hot, state_of(p),
    num(p, 'open_until'), str(h, 'endpoint_hint'), token or '', ttrans or '', ptrans or '',
    first or 0, num(h, 'error_count'), num(h, 'consecutive_errors'), str(h, 'reason'),
    num(p, 'gen'), str(p, 'reason'), str(h, 'compat')}
end

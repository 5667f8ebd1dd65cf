-- record.lua: records the outcome of one call and makes any transition it causes.
--
-- KEYS: see common.lua (target hash, provider hash, index, event stream).
-- ARGV: 1..20 see common.lua, then
--   21 outcome: 's' success, 'r' release a probe lease unused, or an error kind
--   22 generation the call was admitted under ('' = current)
--   23 probe token held by the call ('' none, '<token>' target probe, 'p:<token>' provider)
--   24 retry-after in ms ('' none)
--   25 endpoint hint learned from this failure ('' none)
--   26 endpoint the call used ('' = default)
--   27 redacted, truncated error message
--   28 latency in ms ('' unknown)
--   29 scope of the failure: 't' target, 'p' whole provider
--   30 random number in [-1, 1] for the break's jitter
-- Returns: the common view (common.lua) with code 1; field 11/12 name the transition this
--   run made, so exactly one caller learns of each transition; field 13 is 1 when this was
--   the target's first success.
-- Atomic: read-modify-write of counters, trip decision, event log append and announcement
-- in one script, so N workers failing at once make exactly one trip and lose no count.
-- Generations: a failure admitted under an older generation updates the counters but can
-- never trip; only the holder of the current probe lease can close a half-open target.

local outcome = ARGV[21]
local adm_gen = ARGV[22]
local token = ARGV[23]
local retry_ms = tonumber(ARGV[24])
local new_hint = ARGV[25]
local used = ARGV[26]
local message = ARGV[27]
local latency = tonumber(ARGV[28])
local scope = ARGV[29]
local r = tonumber(ARGV[30]) or 0

local h = load(TKEY)
local p = load(PKEY)
local hc, pc = {}, {}
local ttrans, ptrans = '', ''
local first = 0

local tstate = state_of(h)
local pstate = state_of(p)
local current = adm_gen == '' or tonumber(adm_gen) == num(h, 'gen')
local is_probe = token ~= '' and tstate == 'half_open' and token == h['lease']
local is_pprobe = pstate == 'half_open' and token == 'p:' .. str(p, 'lease')

local function open_target(kind, until_ms, reason, count_trip)
  local from = state_of(h)
  if count_trip then set(h, hc, 'trips', num(h, 'trips') + 1) end
  set(h, hc, 'state', 'open')
  set(h, hc, 'open_until', until_ms)
  set(h, hc, 'reason', reason)
  set(h, hc, 'lease', '')
  set(h, hc, 'lease_until', 0)
  set(h, hc, 'probe_ok', 0)
  if from ~= 'open' then
    set(h, hc, 'gen', num(h, 'gen') + 1)
    transition(MODEL, from, 'open', kind, message, h['gen'], until_ms)
    ttrans = from .. '>open'
  end
end

local function close_target(kind)
  local from = state_of(h)
  set(h, hc, 'state', 'closed')
  set(h, hc, 'gen', num(h, 'gen') + 1)
  set(h, hc, 'open_until', 0)
  set(h, hc, 'reason', '')
  set(h, hc, 'manual', 0)
  set(h, hc, 'lease', '')
  set(h, hc, 'lease_until', 0)
  set(h, hc, 'probe_ok', 0)
  transition(MODEL, from, 'closed', kind, '', h['gen'], 0)
  ttrans = from .. '>closed'
end

local function close_provider(kind)
  local from = state_of(p)
  set(p, pc, 'state', 'closed')
  set(p, pc, 'gen', num(p, 'gen') + 1)
  set(p, pc, 'open_until', 0)
  set(p, pc, 'reason', '')
  set(p, pc, 'manual', 0)
  set(p, pc, 'lease', '')
  set(p, pc, 'lease_until', 0)
  transition('', from, 'closed', kind, '', p['gen'], 0)
  ptrans = from .. '>closed'
end

-- Sliding window of two fixed buckets: the previous bucket's counts weigh by how much of
-- it still overlaps the window ending now.
local function roll_window()
  local bucket = math.floor(NOW / CFG.window_ms)
  local wb = num(h, 'wb')
  if bucket ~= wb then
    if bucket == wb + 1 then
      set(h, hc, 'pf', num(h, 'wf'))
      set(h, hc, 'pt', num(h, 'wt'))
    else
      set(h, hc, 'pf', 0)
      set(h, hc, 'pt', 0)
    end
    set(h, hc, 'wf', 0)
    set(h, hc, 'wt', 0)
    set(h, hc, 'wb', bucket)
  end
  local weight = 1 - (NOW - bucket * CFG.window_ms) / CFG.window_ms
  return weight
end

local function capped_retry(default_ms)
  local d = retry_ms or default_ms
  if d > CFG.max_retry_ms then d = CFG.max_retry_ms end
  if d < 1 then d = 1 end
  return d
end

if outcome == 'r' then
  -- A probe whose call ended without telling anything (cancelled, caller error): free the
  -- lease so the next caller probes instead of waiting for it to expire.
  if is_probe then
    set(h, hc, 'lease', '')
    set(h, hc, 'lease_until', 0)
  end
  if is_pprobe then
    set(p, pc, 'lease', '')
    set(p, pc, 'lease_until', 0)
  end
  if next(hc) ~= nil then save(TKEY, h, hc) end
  if next(pc) ~= nil then save(PKEY, p, pc) end
  return view(1, h, p, '', '', '', 0)
end

init_target(h, hc)
local weight = roll_window()

if outcome == 's' then
  set(h, hc, 'success_count', num(h, 'success_count') + 1)
  set(h, hc, 'consecutive_errors', 0)
  set(h, hc, 'wt', num(h, 'wt') + 1)
  set(h, hc, 'last_success_time', NOW)
  if latency ~= nil then
    local prev = tonumber(h['latency_ms'])
    if prev == nil then prev = latency end
    set(h, hc, 'latency_ms', math.floor(prev * 0.8 + latency * 0.2 + 0.5))
  end
  if num(h, 'success_count') == 1 then first = 1 end
  if is_probe then
    set(h, hc, 'probe_ok', num(h, 'probe_ok') + 1)
    if num(h, 'probe_ok') >= CFG.half_open_successes then
      close_target('probe')
    else
      -- More probes needed: free the lease so the next caller takes the next probe.
      set(h, hc, 'lease', '')
      set(h, hc, 'lease_until', 0)
    end
  end
  if is_pprobe then close_provider('probe') end
else
  local kind = outcome
  set(h, hc, 'error_count', num(h, 'error_count') + 1)
  set(h, hc, 'last_error_time', NOW)
  set(h, hc, 'last_error_kind', kind)
  set(h, hc, 'last_error_message', message)

  local counted = kind == 'server_error' or kind == 'overloaded' or kind == 'timeout'
    or kind == 'connection' or kind == 'unknown' or kind == 'model_not_found'

  if kind == 'endpoint_mismatch' then
    local bad = str(h, 'bad_hints')
    local hint = str(h, 'endpoint_hint')
    if used ~= '' and used == hint then
      -- The learned endpoint failed the same way: it was wrong. Drop it, and never learn
      -- it again for this entry.
      set(h, hc, 'endpoint_hint', '')
      set(h, hc, 'bad_hints', bad .. '|' .. used .. '|')
      bad = h['bad_hints']
    end
    if new_hint ~= '' and new_hint ~= used
        and string.find(bad, '|' .. new_hint .. '|', 1, true) == nil then
      if new_hint ~= str(h, 'endpoint_hint') then set(h, hc, 'endpoint_hint', new_hint) end
    elseif h['endpoint_hint'] == '' or h['endpoint_hint'] == nil then
      -- No endpoint left to try: the model fails wherever we send it, so this counts.
      counted = true
    end
  end

  if counted then
    set(h, hc, 'consecutive_errors', num(h, 'consecutive_errors') + 1)
    set(h, hc, 'wf', num(h, 'wf') + 1)
    set(h, hc, 'wt', num(h, 'wt') + 1)
  end

  if scope == 'p' then
    -- Bad key, no quota, region blocked: every model of the provider fails alike.
    local until_ms = NOW + math.max(CFG.provider_block_ms, capped_retry(0))
    local from = state_of(p)
    init_provider(p, pc)
    if from ~= 'open' or until_ms > num(p, 'open_until') then
      set(p, pc, 'state', 'open')
      set(p, pc, 'open_until', math.max(until_ms, num(p, 'open_until')))
      set(p, pc, 'reason', kind)
      set(p, pc, 'lease', '')
      set(p, pc, 'lease_until', 0)
      if from ~= 'open' then
        set(p, pc, 'trips', num(p, 'trips') + 1)
        set(p, pc, 'gen', num(p, 'gen') + 1)
        transition('', from, 'open', kind, message, p['gen'], p['open_until'])
        ptrans = from .. '>open'
      end
    end
  else
    if is_pprobe and kind ~= 'timeout' and kind ~= 'connection' and kind ~= 'unknown' then
      -- The provider answered with something other than an auth or quota failure: its
      -- key and account work again. (A timeout or a lost connection proves nothing; the
      -- lease is freed below for the next caller.)
      close_provider('probe')
    end
    if kind == 'auth' or kind == 'permission' or kind == 'quota_exhausted' then
      local until_ms = NOW + math.max(CFG.provider_block_ms, capped_retry(0))
      if tstate ~= 'open' or until_ms > num(h, 'open_until') then
        open_target(kind, math.max(until_ms, num(h, 'open_until')), kind, false)
      end
    elseif kind == 'rate_limited' then
      -- Retry-After is a floor: a break only ever gets longer, never shorter.
      local until_ms = NOW + capped_retry(CFG.rate_limit_default_ms)
      if tstate ~= 'open' or until_ms > num(h, 'open_until') then
        open_target(kind, math.max(until_ms, num(h, 'open_until')), kind, false)
      end
    elseif counted then
      if is_probe then
        -- The probe failed: open again, with a longer break.
        local trips = num(h, 'trips') + 1
        local until_ms = NOW + backoff_ms(trips, r)
        if kind == 'model_not_found' then until_ms = NOW + CFG.mnf_open_ms end
        open_target(kind, until_ms, kind, true)
      elseif tstate == 'closed' and current then
        local ce = num(h, 'consecutive_errors')
        local fails = num(h, 'pf') * weight + num(h, 'wf')
        local total = num(h, 'pt') * weight + num(h, 'wt')
        if kind == 'model_not_found' and ce >= CFG.mnf_threshold then
          open_target(kind, NOW + CFG.mnf_open_ms, kind, true)
        elseif ce >= CFG.threshold
            or (total >= CFG.min_calls and fails / total >= CFG.rate) then
          open_target(kind, NOW + backoff_ms(num(h, 'trips') + 1, r), kind, true)
        end
      end
    end
  end
end

if is_probe and state_of(h) == 'half_open' and h['lease'] == token then
  -- The probe ended without settling the state (e.g. a new endpoint hint was learned):
  -- free the lease so the next caller probes at once.
  set(h, hc, 'lease', '')
  set(h, hc, 'lease_until', 0)
end
if is_pprobe and state_of(p) == 'half_open' and p['lease'] == string.sub(token, 3) then
  set(p, pc, 'lease', '')
  set(p, pc, 'lease_until', 0)
end

save(TKEY, h, hc)
touch_index()
if next(pc) ~= nil then save(PKEY, p, pc) end
if ttrans ~= '' or hc['endpoint_hint'] then announce('t', h) end
if ptrans ~= '' then announce('p', p) end
return view(1, h, p, '', ttrans, ptrans, first)

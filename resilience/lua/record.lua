-- record.lua: records the outcome of one call and makes any transition it causes.
--
-- KEYS: see common.lua (target hash, provider hash, index, event stream, event counter).
-- ARGV: the configuration block, provider and model (common.lua), then in ARGV[4] RECORD_FIELDS below
--   (the same tuple as resilience._wire.RECORD_FIELDS):
--   outcome     's' success, 'f' failure, 'r' give an unused probe lease back, 'c' a
--               compatibility error: only its hints are learned (not a provider failure:
--               no counter moves, nothing trips)
--   kind        the error kind: stored and logged, never compared
--   counts      '1' counts toward a trip, '0' does not, 'h' counts only when no endpoint is
--               left to try (the policy row of the kind, resilience._policy)
--   effect      'trip' | 'blacklist' | 'retry_after' | 'block' | 'hint' (the policy row)
--   threshold   consecutive counted failures that open the target (count)
--   break_ms    the kind's fixed break: blacklist, block, retry_after's default (ms)
--   reachable   '1' when such an answer to a provider probe shows the provider works again
--   generation  the generation the call was admitted under ('' = current)
--   token       probe token held by the call ('' none, '<token>' target, 'p:<token>' provider)
--   retry_ms    Retry-After (ms); anything but a positive finite number means none. A trip
--               follows it only when the kind's policy row says so: otherwise it is not sent
--   hint        endpoint hint learned from this failure ('' none)
--   used        endpoint the call used ('' = the default endpoint)
--   message     redacted, truncated error message
--   latency_ms  duration of the call (ms; '' unknown)
--   scope       't' the target, 'p' the whole provider
--   jitter      random number in [-1, 1] spreading the break
--   compat      compatibility hints this failure teaches (space-separated encodings)
--   replaces    for each of them, the encoded prefix of stored hints it replaces (same
--               order; a target keeps one limit of each kind)
--   applied     hints the call applied (a hint applied that is taught again was wrong: it
--               is dropped and never learned again for this target)
-- Returns: REPLY_FIELDS (common.lua) with code 1; transition / provider_transition name the
--   transition this run made, so exactly one caller learns of each; first_success is 1 when
--   this was the target's first success.
-- Atomic: read-modify-write of counters, trip decision, event log append and announcement
-- in one script, so N workers failing at once make exactly one trip and lose no count.
-- Generations: a failure admitted under an older generation updates the counters but can
-- never trip; only the holder of the current probe lease can close a half-open target.

local RECORD_FIELDS = {'outcome', 'kind', 'counts', 'effect', 'threshold', 'break_ms',
  'reachable', 'generation', 'token', 'retry_ms', 'hint', 'used', 'message', 'latency_ms',
  'scope', 'jitter', 'compat', 'replaces', 'applied'}

local A = args(RECORD_FIELDS)
local retry_ms = positive_ms(A.retry_ms)
local threshold = math.max(1, tonumber(A.threshold) or 1)
local break_ms = positive_ms(A.break_ms) or 1
local r = tonumber(A.jitter) or 0
if r ~= r or r > 1 or r < -1 then r = 0 end

local h = load(TKEY)
local p = load(PKEY)
local hc, pc = {}, {}
local ttrans, ptrans, first = '', '', 0

local current = A.generation == '' or tonumber(A.generation) == num(h, 'gen')
local is_probe = A.token ~= '' and state_of(h) == 'half_open' and A.token == h['lease']
local is_pprobe = state_of(p) == 'half_open' and A.token == 'p:' .. str(p, 'lease')

local function open_target(until_ms, count_trip)
  local from = state_of(h)
  if count_trip then set(h, hc, 'trips', num(h, 'trips') + 1) end
  set(h, hc, 'state', 'open')
  set(h, hc, 'open_until', until_ms)
  set(h, hc, 'reason', A.kind)
  clear_lease(h, hc)
  set(h, hc, 'probe_ok', 0)
  if from ~= 'open' then
    set(h, hc, 'gen', num(h, 'gen') + 1)
    log_transition(MODEL, from, 'open', A.kind, A.message, h['gen'], until_ms)
    ttrans = from .. '>open'
  end
end

-- A break that only ever gets longer (Retry-After is a floor): opens, or extends.
local function extend_break(until_ms)
  if state_of(h) ~= 'open' or until_ms > num(h, 'open_until') then
    open_target(math.max(until_ms, num(h, 'open_until')), false)
  end
end

local function close_target(kind)
  local from = state_of(h)
  set(h, hc, 'state', 'closed')
  set(h, hc, 'gen', num(h, 'gen') + 1)
  set(h, hc, 'open_until', 0)
  set(h, hc, 'reason', '')
  set(h, hc, 'manual', 0)
  clear_lease(h, hc)
  set(h, hc, 'probe_ok', 0)
  set(h, hc, 'reopens', 0)
  set(h, hc, 'closed_at', NOW)
  log_transition(MODEL, from, 'closed', kind, '', h['gen'], 0)
  ttrans = from .. '>closed'
end

-- Bad key, no quota, region blocked: every model of the provider fails alike.
local function block_provider(until_ms)
  init_provider(p, pc)
  local from = state_of(p)
  if from == 'open' and until_ms <= num(p, 'open_until') then return end
  set(p, pc, 'state', 'open')
  set(p, pc, 'open_until', math.max(until_ms, num(p, 'open_until')))
  set(p, pc, 'reason', A.kind)
  clear_lease(p, pc)
  if from ~= 'open' then
    set(p, pc, 'trips', num(p, 'trips') + 1)
    set(p, pc, 'gen', num(p, 'gen') + 1)
    log_transition('', from, 'open', A.kind, A.message, p['gen'], p['open_until'])
    ptrans = from .. '>open'
  end
end

local function close_provider(kind)
  local from = state_of(p)
  set(p, pc, 'state', 'closed')
  set(p, pc, 'gen', num(p, 'gen') + 1)
  set(p, pc, 'open_until', 0)
  set(p, pc, 'reason', '')
  set(p, pc, 'manual', 0)
  clear_lease(p, pc)
  log_transition('', from, 'closed', kind, '', p['gen'], 0)
  ptrans = from .. '>closed'
end

-- Frees the leases this call held without settling anything, so the next caller probes
-- at once instead of waiting for the lease to expire.
local function free_unsettled_leases()
  if is_probe and state_of(h) == 'half_open' and h['lease'] == A.token then
    clear_lease(h, hc)
  end
  if is_pprobe and state_of(p) == 'half_open' and p['lease'] == string.sub(A.token, 3) then
    clear_lease(p, pc)
  end
end

local function on_success()
  set(h, hc, 'success_count', num(h, 'success_count') + 1)
  set(h, hc, 'consecutive_errors', 0)
  set(h, hc, 'wt', num(h, 'wt') + 1)
  set(h, hc, 'last_success_time', NOW)
  add_latency(h, hc, tonumber(A.latency_ms))
  if num(h, 'success_count') == 1 then first = 1 end
  if is_probe then
    set(h, hc, 'probe_ok', num(h, 'probe_ok') + 1)
    if num(h, 'probe_ok') >= CFG.half_open_successes then
      close_target('probe')
    else
      clear_lease(h, hc) -- more probes needed: the next caller takes the next one
    end
  end
  if is_pprobe then close_provider('probe') end
end

-- endpoint_mismatch: a learned endpoint that failed the same way was wrong, so it is dropped
-- and never learned again for this entry; a new one named by the error is stored. Returns
-- true while an endpoint is left to try.
local function learn_hint()
  local bad = str(h, 'bad_hints')
  if A.used ~= '' and A.used == str(h, 'endpoint_hint') then
    set(h, hc, 'endpoint_hint', '')
    set(h, hc, 'bad_hints', bad .. '|' .. A.used .. '|')
    bad = h['bad_hints']
  end
  if A.hint ~= '' and A.hint ~= A.used
      and string.find(bad, '|' .. A.hint .. '|', 1, true) == nil then
    set(h, hc, 'endpoint_hint', A.hint)
  end
  return str(h, 'endpoint_hint') ~= ''
end

-- Compatibility hints: learned from the error, kept as a space-separated set. A hint the
-- call applied that the error teaches again was wrong: it is dropped and remembered in
-- bad_compat, never learned again for this entry. At most 32 hints are kept (oldest go).
local function words(text)
  local out = {}
  for w in string.gmatch(text or '', '%S+') do out[#out + 1] = w end
  return out
end

local function learn_compat()
  local new, repl, applied = words(A.compat), words(A.replaces), words(A.applied)
  if #new == 0 and #applied == 0 then return end
  local have, bad = words(h['compat']), ' ' .. str(h, 'bad_compat') .. ' '
  local taught = {}
  for _, w in ipairs(new) do taught[w] = true end
  for _, w in ipairs(applied) do
    if taught[w] then bad = bad .. w .. ' ' end
  end
  local keep = {}
  for _, w in ipairs(have) do
    local replaced = string.find(bad, ' ' .. w .. ' ', 1, true) ~= nil
    for _, prefix in ipairs(repl) do
      if string.sub(w, 1, #prefix) == prefix then replaced = true end
    end
    if not replaced then keep[#keep + 1] = w end
  end
  for _, w in ipairs(new) do
    if string.find(bad, ' ' .. w .. ' ', 1, true) == nil then
      local dup = false
      for _, k in ipairs(keep) do if k == w then dup = true end end
      if not dup then keep[#keep + 1] = w end
    end
  end
  while #keep > 32 do table.remove(keep, 1) end
  set(h, hc, 'compat', table.concat(keep, ' '))
  local trimmed = string.gsub(bad, '^%s+', '')
  trimmed = string.gsub(trimmed, '%s+$', '')
  set(h, hc, 'bad_compat', trimmed)
  if hc['compat'] then
    set(h, hc, 'compat_at', NOW)
    if #new > 0 then set(h, hc, 'compat_message', A.message) end
  end
end

-- The break of a trip: the kind's fixed break (blacklist); else the provider's own word, a
-- Retry-After (sent only for kinds whose policy row follows it), within retry_floor_ms and
-- max_open_ms; else the computed break (common.lua backoff_ms).
local function trip_break_ms()
  if A.effect == 'blacklist' then return break_ms end
  if retry_ms then
    return math.floor(math.min(math.max(retry_ms, CFG.retry_floor_ms), CFG.max_open_ms))
  end
  return backoff_ms(num(h, 'reopens'), num(h, 'flaps'), r)
end

-- A trip of a closed target: a flap when a probe closed it less than flap_window_ms ago
-- (flaps in a row lengthen the break); a trip after a longer healthy spell starts afresh.
local function count_flap()
  local closed_at = num(h, 'closed_at')
  if closed_at > 0 and NOW - closed_at < CFG.flap_window_ms then
    set(h, hc, 'flaps', num(h, 'flaps') + 1)
  else
    set(h, hc, 'flaps', 0)
  end
  set(h, hc, 'reopens', 0)
end

-- A counted failure: the probe failing re-opens for the next break; otherwise a closed
-- target of the current generation trips on the consecutive count or the failure rate.
local function maybe_trip(weight)
  if is_probe then
    set(h, hc, 'reopens', num(h, 'reopens') + 1)
    open_target(NOW + trip_break_ms(), true)
    return
  end
  if state_of(h) ~= 'closed' or not current then return end
  local fails = num(h, 'pf') * weight + num(h, 'wf')
  local total = num(h, 'pt') * weight + num(h, 'wt')
  if num(h, 'consecutive_errors') >= threshold
      or (total >= CFG.min_calls and fails / total >= CFG.failure_rate_threshold) then
    count_flap()
    open_target(NOW + trip_break_ms(), true)
  end
end

local function on_failure(weight)
  set(h, hc, 'error_count', num(h, 'error_count') + 1)
  set(h, hc, 'last_error_time', NOW)
  set(h, hc, 'last_error_kind', A.kind)
  set(h, hc, 'last_error_message', A.message)
  local counted = A.counts == '1'
  if A.effect == 'hint' then
    local left = learn_hint()
    if A.counts == 'h' then counted = not left end
  end
  if counted then
    set(h, hc, 'consecutive_errors', num(h, 'consecutive_errors') + 1)
    set(h, hc, 'wf', num(h, 'wf') + 1)
    set(h, hc, 'wt', num(h, 'wt') + 1)
  end
  if A.scope == 'p' then
    block_provider(NOW + math.max(break_ms, capped_retry(retry_ms, 0)))
    return
  end
  -- Any answer but a timeout or a lost connection shows the key and account work again.
  if is_pprobe and A.reachable == '1' then close_provider('probe') end
  if A.effect == 'block' then
    extend_break(NOW + math.max(break_ms, capped_retry(retry_ms, 0)))
  elseif A.effect == 'retry_after' then
    extend_break(NOW + capped_retry(retry_ms, break_ms))
  elseif counted then
    maybe_trip(weight)
  end
end

if A.outcome == 'r' or A.outcome == 'c' then
  if A.outcome == 'c' then
    init_target(h, hc)
    learn_compat()
  end
  free_unsettled_leases()
  if next(hc) ~= nil then
    save(TKEY, h, hc)
    touch_index()
  end
  if next(pc) ~= nil then save(PKEY, p, pc) end
  if hc['compat'] then announce('t', h) end
  return reply(1, h, p, '', '', '', 0)
end

init_target(h, hc)
local weight = roll_window(h, hc)
if A.outcome == 's' then on_success() else on_failure(weight) end
learn_compat()
free_unsettled_leases()

save(TKEY, h, hc)
touch_index()
if next(pc) ~= nil then save(PKEY, p, pc) end
if ttrans ~= '' or hc['endpoint_hint'] or hc['compat'] then announce('t', h) end
if ptrans ~= '' then announce('p', p) end
return reply(1, h, p, '', ttrans, ptrans, first)

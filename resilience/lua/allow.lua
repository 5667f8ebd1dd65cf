-- allow.lua: may a call to this target go now? Hands out the half-open probe lease.
--
-- KEYS: see common.lua (target hash, provider hash, index, event stream, event counter).
-- ARGV: the configuration block, provider and model (common.lua), then in ARGV[4] ALLOW_FIELDS below
--   (the same tuple as resilience._wire.ALLOW_FIELDS):
--   candidate   a probe token candidate (random hex from the caller)
-- Returns: REPLY_FIELDS (common.lua); code 1 = allowed, 2 = allowed as the probe (token holds
--   the lease: '<token>' for a target probe, 'p:<token>' for a provider probe), 0 = denied
--   (open_until_ms and provider_until_ms tell until when).
-- Atomic because checking the break and taking the lease happen in one script: of any
-- number of workers asking at once, exactly one gets a lease, and a lease held by a worker
-- that died expires after probe_lease_ms.
-- Writes only on a transition (open -> half_open) or a lease grant; a plain 'closed'
-- answer writes nothing.

local ALLOW_FIELDS = {'candidate'}

-- The fields an admission reads, writes or replies with (not the whole hashes).
local TARGET_READ = {'since', 'state', 'gen', 'open_until', 'lease_until', 'probe_ok',
  'consecutive_errors', 'error_count', 'endpoint_hint', 'reason', 'compat'}
local PROVIDER_READ = {'since', 'state', 'gen', 'open_until', 'lease_until', 'reason'}

local A = args(ALLOW_FIELDS)
local h = load_fields(TKEY, TARGET_READ)
local p = load_fields(PKEY, PROVIDER_READ)
local hc, pc = {}, {}
local ttrans, ptrans = '', ''

-- A provider block whose time is up becomes half open: its next call probes it.
local function end_provider_break()
  if state_of(p) == 'open' and NOW >= num(p, 'open_until') then
    set(p, pc, 'state', 'half_open')
    set(p, pc, 'gen', num(p, 'gen') + 1)
    clear_lease(p, pc)
    log_transition('', 'open', 'half_open', 'probe', '', p['gen'], 0)
    ptrans = 'open>half_open'
  end
end

-- True while a break lasts or another caller holds the probe lease. The provider-wide
-- block comes first: it covers every model.
local function held()
  local ps, ts = state_of(p), state_of(h)
  return ps == 'open'
    or (ps == 'half_open' and NOW < num(p, 'lease_until'))
    or (ts == 'open' and NOW < num(h, 'open_until'))
    or (ts == 'half_open' and NOW < num(h, 'lease_until'))
end

-- Provider probe: this call tells whether the key or account works again.
local function grant_provider_probe()
  set(p, pc, 'lease', A.candidate)
  set(p, pc, 'lease_until', NOW + CFG.probe_lease_ms)
  return 'p:' .. A.candidate
end

-- Target probe: a break that is over becomes half open, and this caller probes it.
local function grant_target_probe()
  if state_of(h) == 'open' then
    init_target(h, hc)
    set(h, hc, 'state', 'half_open')
    set(h, hc, 'gen', num(h, 'gen') + 1)
    set(h, hc, 'probe_ok', 0)
    log_transition(MODEL, 'open', 'half_open', 'probe', '', h['gen'], 0)
    ttrans = 'open>half_open'
  end
  set(h, hc, 'lease', A.candidate)
  set(h, hc, 'lease_until', NOW + CFG.probe_lease_ms)
  return A.candidate
end

end_provider_break()
local code, token = 1, ''
if held() then
  code = 0
elseif state_of(p) == 'half_open' then
  code, token = 2, grant_provider_probe()
elseif state_of(h) ~= 'closed' then
  code, token = 2, grant_target_probe()
end

if next(hc) ~= nil then
  save(TKEY, h, hc)
  touch_index()
end
if next(pc) ~= nil then save(PKEY, p, pc) end
if ttrans ~= '' then announce('t', h) end
if ptrans ~= '' then announce('p', p) end
return reply(code, h, p, token, ttrans, ptrans, 0)

-- allow.lua: may a call to this target go now? Hands out the half-open probe lease.
--
-- KEYS: see common.lua (target hash, provider hash, index, event stream).
-- ARGV: 1..20 see common.lua; 21 probe token candidate (random hex from the caller).
-- Returns: the common view (common.lua); code 1 = allowed, 2 = allowed as the probe (the
--   token is in field 10: a target probe, or 'p:<token>' for a provider probe), 0 = denied
--   (fields 4 and 8 tell until when).
-- Atomic because checking the break and taking the lease happen in one script: of any
-- number of workers asking at once, exactly one gets a lease, and a lease held by a worker
-- that died expires after probe_lease_ms.
-- Writes only on a transition (open -> half_open) or a lease grant; a plain 'closed'
-- answer writes nothing.

local candidate = ARGV[21]
local h = load(TKEY)
local p = load(PKEY)
local hchanged, pchanged = {}, {}
local ttrans, ptrans = '', ''
local code, token = 1, ''

-- Provider-wide block (auth, permission, quota) comes first: it covers every model.
local pstate = state_of(p)
if pstate == 'open' and NOW >= num(p, 'open_until') then
  set(p, pchanged, 'state', 'half_open')
  set(p, pchanged, 'gen', num(p, 'gen') + 1)
  set(p, pchanged, 'lease', '')
  set(p, pchanged, 'lease_until', 0)
  transition('', 'open', 'half_open', 'probe', '', p['gen'], 0)
  ptrans = 'open>half_open'
  pstate = 'half_open'
end

local tstate = state_of(h)
if pstate == 'open' then
  code = 0
elseif pstate == 'half_open' and NOW < num(p, 'lease_until') then
  code = 0
elseif tstate == 'open' and NOW < num(h, 'open_until') then
  code = 0
elseif tstate == 'half_open' and NOW < num(h, 'lease_until') then
  code = 0
elseif pstate == 'half_open' then
  -- Provider probe: this call tells whether the key or account works again.
  set(p, pchanged, 'lease', candidate)
  set(p, pchanged, 'lease_until', NOW + CFG.lease_ms)
  code, token = 2, 'p:' .. candidate
elseif tstate ~= 'closed' then
  if tstate == 'open' then
    init_target(h, hchanged)
    set(h, hchanged, 'state', 'half_open')
    set(h, hchanged, 'gen', num(h, 'gen') + 1)
    set(h, hchanged, 'probe_ok', 0)
    transition(MODEL, 'open', 'half_open', 'probe', '', h['gen'], 0)
    ttrans = 'open>half_open'
  end
  set(h, hchanged, 'lease', candidate)
  set(h, hchanged, 'lease_until', NOW + CFG.lease_ms)
  code, token = 2, candidate
end

if next(hchanged) ~= nil then
  save(TKEY, h, hchanged)
  touch_index()
end
if next(pchanged) ~= nil then save(PKEY, p, pchanged) end
if ttrans ~= '' then announce('t', h) end
if ptrans ~= '' then announce('p', p) end
return view(code, h, p, token, ttrans, ptrans, 0)

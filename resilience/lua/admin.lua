-- admin.lua: an operator's change to a target or a whole provider.
--
-- KEYS: see common.lua (target hash, provider hash, index, event stream).
-- ARGV: 1..20 see common.lua, then
--   21 operation: 'block' | 'unblock' | 'reset' (target) or 'block_provider' |
--      'unblock_provider' (every model of the provider)
--   22 block duration in ms (block operations)
--   23 reason text (already redacted by the caller)
-- Returns: the common view (common.lua), code 1.
-- Atomic like every state change: the transition, its log entry and its announcement happen
-- together, so the fleet sees one consistent change.
-- A manual block ends like any break: after it, one probe decides whether the target closes.
-- 'reset' forgets the counters (a new 'since' marks the restart) but keeps the generation
-- growing, so calls admitted before the reset cannot flip the new state.

local op = ARGV[21]
local dur = tonumber(ARGV[22]) or 0
local reason = ARGV[23]
local h = load(TKEY)
local p = load(PKEY)
local hc, pc = {}, {}
local ttrans, ptrans = '', ''

if op == 'block' then
  init_target(h, hc)
  local from = state_of(h)
  set(h, hc, 'state', 'open')
  set(h, hc, 'open_until', NOW + dur)
  set(h, hc, 'reason', reason)
  set(h, hc, 'manual', 1)
  set(h, hc, 'lease', '')
  set(h, hc, 'lease_until', 0)
  set(h, hc, 'probe_ok', 0)
  set(h, hc, 'gen', num(h, 'gen') + 1)
  transition(MODEL, from, 'open', 'manual', reason, h['gen'], h['open_until'])
  ttrans = from .. '>open'
elseif op == 'unblock' or op == 'reset' then
  local from = state_of(h)
  local gen = num(h, 'gen') + 1
  if op == 'reset' then
    redis.call('DEL', TKEY)
    h, hc = {}, {}
  end
  init_target(h, hc)
  set(h, hc, 'state', 'closed')
  set(h, hc, 'gen', gen)
  set(h, hc, 'open_until', 0)
  set(h, hc, 'reason', '')
  set(h, hc, 'manual', 0)
  set(h, hc, 'lease', '')
  set(h, hc, 'lease_until', 0)
  set(h, hc, 'probe_ok', 0)
  set(h, hc, 'consecutive_errors', 0)
  if op == 'unblock' then set(h, hc, 'trips', 0) end
  local kind = 'manual'
  if op == 'reset' then kind = 'reset' end
  if from ~= 'closed' then
    -- Only a real change of state is a transition; resetting a closed target's counters
    -- is announced (views refresh) but not logged as one.
    transition(MODEL, from, 'closed', kind, reason, gen, 0)
    ttrans = from .. '>closed'
  else
    announce('t', h)
  end
elseif op == 'block_provider' then
  -- The named model gets an entry too, so listings show the block through it.
  init_target(h, hc)
  init_provider(p, pc)
  local from = state_of(p)
  set(p, pc, 'state', 'open')
  set(p, pc, 'open_until', NOW + dur)
  set(p, pc, 'reason', reason)
  set(p, pc, 'manual', 1)
  set(p, pc, 'lease', '')
  set(p, pc, 'lease_until', 0)
  set(p, pc, 'gen', num(p, 'gen') + 1)
  transition('', from, 'open', 'manual', reason, p['gen'], p['open_until'])
  ptrans = from .. '>open'
elseif op == 'unblock_provider' then
  init_provider(p, pc)
  local from = state_of(p)
  set(p, pc, 'state', 'closed')
  set(p, pc, 'open_until', 0)
  set(p, pc, 'reason', '')
  set(p, pc, 'manual', 0)
  set(p, pc, 'lease', '')
  set(p, pc, 'lease_until', 0)
  set(p, pc, 'gen', num(p, 'gen') + 1)
  if from ~= 'closed' then
    transition('', from, 'closed', 'manual', reason, p['gen'], 0)
    ptrans = from .. '>closed'
  end
else
  return redis.error_reply('ERR unknown admin operation: ' .. op)
end

if next(hc) ~= nil then
  save(TKEY, h, hc)
  touch_index()
end
if next(pc) ~= nil then save(PKEY, p, pc) end
if ttrans ~= '' then announce('t', h) end
if ptrans ~= '' then announce('p', p) end
return view(1, h, p, '', ttrans, ptrans, 0)

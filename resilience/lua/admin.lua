-- admin.lua: an operator's change to a target or a whole provider.
--
-- KEYS: see common.lua (target hash, provider hash, index, event stream, event counter).
-- ARGV: the configuration block, provider and model (common.lua; the model is '' for the
--   provider-wide operations, whose target key is then never touched), then in ARGV[4]
--   ADMIN_FIELDS
--   below (the same tuple as resilience._wire.ADMIN_FIELDS):
--   operation    'block' | 'unblock' | 'reset' (one target) or 'block_provider' |
--                'unblock_provider' (every model of the provider)
--   duration_ms  block duration (ms, positive; block operations only)
--   reason       the operator's reason (already redacted by the caller)
-- Returns: REPLY_FIELDS (common.lua), code 1; an error reply for an unknown operation or a
--   block without a positive duration.
-- Atomic like every state change: the transition, its log entry and its announcement happen
-- together, so the fleet sees one consistent change.
-- A manual block ends like any break: after it, one probe decides whether the target closes.
-- 'reset' forgets the counters and learned hints (a new 'since' marks the restart) but keeps
-- the generation growing, so calls admitted before the reset cannot flip the new state.

local ADMIN_FIELDS = {'operation', 'duration_ms', 'reason'}

local A = args(ADMIN_FIELDS)
local dur = positive_ms(A.duration_ms)
local h, p = {}, load(PKEY)
if MODEL ~= '' then h = load(TKEY) end
local hc, pc = {}, {}
local ttrans, ptrans = '', ''

local function block_target()
  init_target(h, hc)
  local from = state_of(h)
  set(h, hc, 'state', 'open')
  set(h, hc, 'open_until', NOW + dur)
  set(h, hc, 'reason', A.reason)
  set(h, hc, 'manual', 1)
  clear_lease(h, hc)
  set(h, hc, 'probe_ok', 0)
  set(h, hc, 'gen', num(h, 'gen') + 1)
  log_transition(MODEL, from, 'open', 'manual', A.reason, h['gen'], h['open_until'])
  ttrans = from .. '>open'
end

local function close_target(op)
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
  clear_lease(h, hc)
  set(h, hc, 'probe_ok', 0)
  set(h, hc, 'consecutive_errors', 0)
  if op == 'unblock' then -- the operator's word: the backoff starts afresh
    set(h, hc, 'trips', 0)
    set(h, hc, 'reopens', 0)
    set(h, hc, 'flaps', 0)
    set(h, hc, 'closed_at', 0)
  end
  local kind = 'manual'
  if op == 'reset' then kind = 'reset' end
  if from ~= 'closed' then
    log_transition(MODEL, from, 'closed', kind, A.reason, gen, 0)
    ttrans = from .. '>closed'
  else
    -- Resetting a closed target's counters is announced (views refresh) but is not a
    -- transition, so it is not logged as one.
    announce('t', h)
  end
end

local function block_whole_provider()
  init_provider(p, pc)
  local from = state_of(p)
  set(p, pc, 'state', 'open')
  set(p, pc, 'open_until', NOW + dur)
  set(p, pc, 'reason', A.reason)
  set(p, pc, 'manual', 1)
  clear_lease(p, pc)
  set(p, pc, 'gen', num(p, 'gen') + 1)
  log_transition('', from, 'open', 'manual', A.reason, p['gen'], p['open_until'])
  ptrans = from .. '>open'
end

local function unblock_whole_provider()
  init_provider(p, pc)
  local from = state_of(p)
  set(p, pc, 'state', 'closed')
  set(p, pc, 'open_until', 0)
  set(p, pc, 'reason', '')
  set(p, pc, 'manual', 0)
  clear_lease(p, pc)
  set(p, pc, 'gen', num(p, 'gen') + 1)
  if from ~= 'closed' then
    log_transition('', from, 'closed', 'manual', A.reason, p['gen'], 0)
    ptrans = from .. '>closed'
  end
end

local op = A.operation
local per_target = op == 'block' or op == 'unblock' or op == 'reset'
if not per_target and op ~= 'block_provider' and op ~= 'unblock_provider' then
  return redis.error_reply('ERR unknown admin operation: ' .. op)
end
if per_target and MODEL == '' then
  return redis.error_reply('ERR ' .. op .. ' needs a model')
end
if (op == 'block' or op == 'block_provider') and dur == nil then
  return redis.error_reply('ERR ' .. op .. ' needs a positive duration_ms')
end

if op == 'block' then
  block_target()
elseif op == 'unblock' or op == 'reset' then
  close_target(op)
elseif op == 'block_provider' then
  block_whole_provider()
else
  unblock_whole_provider()
end

if next(hc) ~= nil then
  save(TKEY, h, hc)
  touch_index()
end
if next(pc) ~= nil then save(PKEY, p, pc) end
if ttrans ~= '' then announce('t', h) end
if ptrans ~= '' then announce('p', p) end
return reply(1, h, p, '', ttrans, ptrans, 0)

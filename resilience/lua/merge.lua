-- merge.lua: adds outcome counts summed in one process to targets of one provider.
--
-- KEYS: 1..5 as in common.lua for the provider (KEYS[1], the key of the empty model, is
--   never touched), then KEYS[6..5+N]: the hashes of the N targets of the items, in order.
-- ARGV: the configuration block, provider and '' (common.lua), then in ARGV[4] the items
--   one after another, each MERGE_FIELDS below (the same tuple as
--   resilience._wire.MERGE_FIELDS):
--   model       the encoded model (as in its key)
--   successes   successes to add (count)
--   failures    failures to add (count; outcomes seen while Redis was unreachable)
--   latency_ms  mean latency of those successes (ms; '' unknown)
--   recent      '1' when the outcomes happened within the last flush interval, so they also
--               count in the failure-rate window; '0' for outcomes replayed after an outage
-- Returns: now_ms, then the provider's MERGE_PROVIDER_REPLY_FIELDS (resilience._wire):
--   provider_state, provider_generation, provider_until_ms, provider_reason, then per item
--   MERGE_REPLY_FIELDS: state, generation, open_until_ms, hot (1 while errors are
--   consecutive), so the caller's local view of the provider and of each target stays fresh
--   without reads of its own.
-- Atomic: each target's counters change in one step, between any two other outcomes. A
-- merge adds counts only: no transition, no event, no announcement; it never opens or closes
-- a target, and never touches consecutive_errors (those successes happened before the
-- latest outcomes of other processes).

local MERGE_FIELDS = {'model', 'successes', 'failures', 'latency_ms', 'recent'}
-- The hash fields a merge reads (not the whole hash: a merge runs for many targets at once).
local READ = {'since', 'state', 'gen', 'open_until', 'consecutive_errors', 'success_count',
  'error_count', 'latency_ms', 'wb', 'wf', 'wt', 'pf', 'pt'}

local raw = split(ARGV[4] or '', '\31')
local p = load_fields(PKEY, {'state', 'gen', 'open_until', 'reason'})
local out = {NOW, state_of(p), num(p, 'gen'), num(p, 'open_until'), str(p, 'reason')}
local width = #MERGE_FIELDS
local members = {}  -- score, model, ... for one ZADD of the provider's index
for i = 1, math.floor(#raw / width) do
  local item = {}
  for j, name in ipairs(MERGE_FIELDS) do item[name] = raw[(i - 1) * width + j] end
  local key = KEYS[5 + i]
  local h, hc = load_fields(key, READ), {}
  local ok = math.max(0, math.floor(tonumber(item.successes) or 0))
  local bad = math.max(0, math.floor(tonumber(item.failures) or 0))
  init_target(h, hc, item.model)
  if ok > 0 then
    set(h, hc, 'success_count', num(h, 'success_count') + ok)
    set(h, hc, 'last_success_time', NOW)
    add_latency(h, hc, tonumber(item.latency_ms))
  end
  if bad > 0 then set(h, hc, 'error_count', num(h, 'error_count') + bad) end
  if item.recent == '1' and ok > 0 then
    roll_window(h, hc)
    set(h, hc, 'wt', num(h, 'wt') + ok)
  end
  save(key, h, hc)
  members[#members + 1] = NOW
  members[#members + 1] = item.model
  local hot = 0
  if num(h, 'consecutive_errors') > 0 then hot = 1 end
  out[#out + 1] = state_of(h)
  out[#out + 1] = num(h, 'gen')
  out[#out + 1] = num(h, 'open_until')
  out[#out + 1] = hot
end
-- The index as touch_index keeps it, in one ZADD and one PEXPIRE for all the items.
if #members > 0 then
  if redis.call('ZADD', IDX, unpack(members)) > 0 then
    redis.call('ZREMRANGEBYSCORE', IDX, '-inf', NOW - CFG.state_ttl_ms - CFG.max_retry_ms)
  end
  redis.call('PEXPIRE', IDX, CFG.state_ttl_ms + CFG.max_retry_ms)
end
return out

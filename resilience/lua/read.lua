-- read.lua: the fields a listing needs of many targets of one provider, in one call.
--
-- Standalone and read-only: loaded without the common.lua prelude; writes nothing.
-- KEYS: KEYS[1] the provider hash, KEYS[2..N+1] target hashes of that provider (one hash
--   tag, so the call runs on one cluster node).
-- ARGV: the hash fields to read, in the order of resilience._wire.READ_FIELDS (the same for
--   the provider hash and every target hash).
-- Returns: now_ms, then one string per key (the provider first): its fields joined by the
--   unit separator \31, '' where a field is absent (the stored text never holds \31). One
--   string per target instead of one per field keeps the reply cheap to send and to parse.
-- Atomic: the fields of all the targets are read at one instant of the provider's state, in
--   one round trip and one command to encode instead of one per target.

local t = redis.call('TIME')
local out = {t[1] * 1000 + math.floor(t[2] / 1000)}
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, #ARGV do
    if not values[j] then values[j] = '' end
  end
  out[i + 1] = table.concat(values, '\31')
end
return out

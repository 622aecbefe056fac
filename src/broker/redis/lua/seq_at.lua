-- The cursor for "every event published at or after `since`" (micros): the seq before the
-- first kept event stamped at or after it, found by bisection over the contiguous stream; or
-- before the newest dropped event when that one is at or after `since` (the gap then shows).
-- KEYS: meta, stream, ids. ARGV: channel, max_events, max_bytes, max_age, since.
local meta, stream, ids = KEYS[1], KEYS[2], KEYS[3]
local ch = ARGV[1]
local since = tonumber(ARGV[5])
local now = now_micros(meta)
epoch_of(meta, now)
trim(meta, stream, ids, ch, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), now)
local last = tonumber(redis.call('HGET', meta, 'seq:' .. ch) or '0')
local dt = redis.call('HGET', meta, 'dt:' .. ch)
if dt and tonumber(dt) >= since then
  return tonumber(redis.call('HGET', meta, 'dseq:' .. ch)) - 1
end
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
if not first then
  return last
end
local lo, hi = seq_of(first[1]), last + 1
while lo < hi do
  local mid = math.floor((lo + hi) / 2)
  local entry = redis.call('XRANGE', stream, int(mid) .. '-0', int(mid) .. '-0')[1]
  if tonumber(entry[2][4]) >= since then
    hi = mid
  else
    lo = mid + 1
  end
end
return lo - 1

-- A channel's history as one consistent view: applies the limits, then answers
-- {epoch, last_seq, oldest_seq (0: none), events, bytes, seq_1, frame_1, seq_2, frame_2, ...}
-- with up to `limit` entries of seqs from..until.
-- KEYS: meta, stream, ids. ARGV: channel, max_events, max_bytes, max_age, from, until, limit.
local meta, stream, ids = KEYS[1], KEYS[2], KEYS[3]
local ch = ARGV[1]
local now = now_micros(meta)
local epoch = epoch_of(meta, now)
trim(meta, stream, ids, ch, tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), now)
local last = tonumber(redis.call('HGET', meta, 'seq:' .. ch) or '0')
local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
local oldest = 0
if first then
  oldest = seq_of(first[1])
end
local out = { epoch, last, oldest, redis.call('XLEN', stream),
  tonumber(redis.call('HGET', meta, 'bytes:' .. ch) or '0') }
local limit = tonumber(ARGV[7])
if limit > 0 then
  local entries = redis.call('XRANGE', stream, ARGV[5] .. '-0', ARGV[6] .. '-0', 'COUNT', limit)
  for _, entry in ipairs(entries) do
    out[#out + 1] = seq_of(entry[1])
    out[#out + 1] = entry[2][2]
  end
end
return out

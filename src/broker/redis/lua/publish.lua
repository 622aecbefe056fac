-- One batch, atomically: for each event, take its channel's next seq, stamp it with Redis's
-- clock, append it to the channel's stream (trimmed to [history]), and PUBLISH it to the
-- channel's Redis channel as "<epoch> <seq> <frame>". Every node sees each channel in one
-- order because numbering, keeping and publishing are one step.
-- KEYS[1] = meta; per event i: KEYS[3i-1] stream, KEYS[3i] ids, KEYS[3i+1] Redis channel.
-- ARGV[1] = n; per event i, from a = 2 + 7(i-1): channel, max_events, max_bytes,
-- max_age (micros, 0 = none), event id, frame head (up to the timestamp's value), frame tail
-- (after it, without the closing brace).
-- Returns {epoch, seq_1, ..., seq_n}.

-- RFC 3339 with microseconds (the frames' format), from Unix microseconds: days to a civil
-- date with Howard Hinnant's algorithm (the scripting Lua has no os.date).
local function timestamp(micros)
  local secs = math.floor(micros / 1000000)
  local us = micros - secs * 1000000
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then
    y = y + 1
  end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, us)
end

local meta = KEYS[1]
local n = tonumber(ARGV[1])
local now = now_micros(meta)
local epoch = epoch_of(meta, now)
local stamp = timestamp(now)
local out = { epoch }
for i = 1, n do
  local a = 2 + 7 * (i - 1)
  local ch, id = ARGV[a], ARGV[a + 4]
  local stream, ids, channel = KEYS[3 * i - 1], KEYS[3 * i], KEYS[3 * i + 1]
  local seq = redis.call('HINCRBY', meta, 'seq:' .. ch, 1)
  local frame = ARGV[a + 5] .. stamp .. ARGV[a + 6] .. ',"seq":' .. int(seq)
    .. ',"epoch":' .. epoch .. '}'
  redis.call('XADD', stream, int(seq) .. '-0', 'f', frame, 't', int(now), 'i', id)
  redis.call('HSET', ids, id, int(seq))
  local bytes = redis.call('HINCRBY', meta, 'bytes:' .. ch, string.len(frame))
  trim(meta, stream, ids, ch, tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]),
    tonumber(ARGV[a + 3]), now, bytes)
  redis.call('PUBLISH', channel, epoch .. ' ' .. int(seq) .. ' ' .. frame)
  out[#out + 1] = seq
end
redis.call('HSET', meta, 't', int(now))
return out

-- Shared by every script (prepended to each): the clock, the epoch, the history trim.
-- Keys: <prefix>:meta (hash: epoch, t, seq:<ch>, bytes:<ch>, dseq:<ch>, dt:<ch>),
-- <prefix>:stream:<ch> (entries <seq>-0 with fields f = frame, t = micros, i = event id),
-- <prefix>:ids:<ch> (hash: event id -> seq).

-- Lua numbers are doubles: integers print through %d, never tostring (which writes 1.7e+15).
local function int(n)
  return string.format('%d', n)
end

-- Redis's own clock in microseconds, never behind the last stamp: times rise with seqs
-- even if the server's clock steps back.
local function now_micros(meta)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local last = tonumber(redis.call('HGET', meta, 't') or '0')
  if now < last then
    now = last
  end
  return now
end

-- The cluster's epoch: made from the clock the first time, so it is new whenever the
-- history was lost with the rest of the keys.
local function epoch_of(meta, now)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = int(now)
    redis.call('HSET', meta, 'epoch', epoch)
  end
  return epoch
end

local function seq_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- Drops the oldest entries while any limit is exceeded (count, bytes, age), and remembers
-- the newest one dropped (for since_time). At most 1000 per call; readers apply the age too.
local function trim(meta, stream, ids, ch, max_events, max_bytes, max_age, now)
  local bytes_field = 'bytes:' .. ch
  for _ = 1, 1000 do
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if not first then
      return
    end
    local fields = first[2]
    local t = tonumber(fields[4])
    local len = redis.call('XLEN', stream)
    local bytes = tonumber(redis.call('HGET', meta, bytes_field) or '0')
    local old = max_age > 0 and t < now - max_age
    if len <= max_events and bytes <= max_bytes and not old then
      return
    end
    redis.call('XDEL', stream, first[1])
    redis.call('HDEL', ids, fields[6])
    redis.call('HINCRBY', meta, bytes_field, -string.len(fields[2]))
    redis.call('HSET', meta, 'dseq:' .. ch, int(seq_of(first[1])), 'dt:' .. ch, int(t))
  end
end

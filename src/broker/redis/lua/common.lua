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
-- `bytes`: the channel's byte count when the caller has it (publish.lua just added to it).
-- Counts and bytes are kept in Lua while dropping, and the oldest entry is read only when a
-- limit may be exceeded, so a publish into a full stream costs 5 to 7 calls, not 10.
local function trim(meta, stream, ids, ch, max_events, max_bytes, max_age, now, bytes)
  local bytes_field = 'bytes:' .. ch
  local len = redis.call('XLEN', stream)
  bytes = bytes or tonumber(redis.call('HGET', meta, bytes_field) or '0')
  local freed, dropped, dropped_t = 0, nil, nil
  for _ = 1, 1000 do
    local over = len > max_events or bytes - freed > max_bytes
    if len == 0 or (not over and max_age <= 0) then
      break
    end
    local first = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
    if not first then
      break
    end
    local fields = first[2]
    local t = tonumber(fields[4])
    if not over and t >= now - max_age then
      break
    end
    redis.call('XDEL', stream, first[1])
    redis.call('HDEL', ids, fields[6])
    freed = freed + string.len(fields[2])
    len = len - 1
    dropped, dropped_t = first[1], t
  end
  if freed > 0 then
    redis.call('HINCRBY', meta, bytes_field, -freed)
  end
  if dropped then
    redis.call('HSET', meta, 'dseq:' .. ch, int(seq_of(dropped)), 'dt:' .. ch, int(dropped_t))
  end
end

-- Takes one of an IP's connection slots, cluster-wide, if one is free: a sorted set of
-- connection -> expiry (ms, Redis's clock), expired members dropped first. Atomic, so of N
-- simultaneous handshakes on any nodes exactly the limit get one.
-- KEYS[1] = <prefix>:ip:<ip>. ARGV: connection, limit, ttl (ms). Returns 1 if taken, else 0.
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
if redis.call('ZCARD', key) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', key, now + ttl, ARGV[1])
redis.call('PEXPIRE', key, ttl)
return 1

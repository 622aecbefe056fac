-- Renews this node's leases: each connection's expiry moves to now + ttl (Redis's clock).
-- A lease Redis lost (a restart) is taken again, so the limit holds again from here on.
-- KEYS = <prefix>:ip:<ip> per lease; ARGV[1] = ttl (ms), ARGV[1 + i] = connection of KEYS[i].
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS

-- Renews this node's leases: each connection's expiry moves to now + ttl (Redis's clock).
-- ARGV[2] = 'XX' on the periodic renewal: only leases still present are renewed, so a socket
-- that closed during the renewal cannot be brought back. '' right after (re)connecting to
-- Redis: every lease is taken again, so the limit holds again after a Redis restart.
-- KEYS = <prefix>:ip:<ip> per lease; ARGV[1] = ttl (ms), ARGV[2] = 'XX' or '',
-- ARGV[2 + i] = connection of KEYS[i].
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local only_present = ARGV[2] == 'XX'
for i, key in ipairs(KEYS) do
  if only_present then
    redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 2])
  else
    redis.call('ZADD', key, now + ttl, ARGV[i + 2])
  end
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS

-- Refreshes the keys of this node's leases, so a socket open for days keeps its slot (a
-- lease's liveness is its node's alive key; this only keeps the set from expiring).
-- ARGV[2] = 'XX' on the periodic refresh: only leases still present are refreshed, so a
-- socket that closed meanwhile cannot be brought back. '' right after (re)connecting to
-- Redis: every lease is taken again, so the limit holds again after a Redis restart.
-- KEYS = <prefix>:ip:<ip> per lease; ARGV[1] = key ttl (ms), ARGV[2] = 'XX' or '',
-- ARGV[2 + i] = connection of KEYS[i].
local only_present = ARGV[2] == 'XX'
for i, key in ipairs(KEYS) do
  if only_present then
    redis.call('ZADD', key, 'XX', 0, ARGV[i + 2])
  else
    redis.call('ZADD', key, 0, ARGV[i + 2])
  end
  redis.call('PEXPIRE', key, ARGV[1])
end
return #KEYS

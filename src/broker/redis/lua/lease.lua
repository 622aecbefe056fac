-- Takes one of an IP's connection slots, cluster-wide, if one is free. The slots are a sorted
-- set of connections ("<node>:<uuid>"); a connection counts while its node is alive (its key
-- <prefix>:alive:<node> exists, set with a TTL and renewed by the node), so a dead node's
-- connections drop out when its one key expires and no lease is renewed one by one. Atomic,
-- so of N simultaneous handshakes on any nodes exactly the limit get one.
-- KEYS[1] = <prefix>:ip:<ip>. ARGV: connection, limit, key ttl (ms), "<prefix>:alive:",
-- this node, heartbeat ttl (ms). Returns {1 if taken else 0, 1 if this node's own alive key
-- had lapsed (then the node takes its leases again: others may have dropped them) else 0}.
-- (The alive keys are named from ARGV: one Redis, not Redis Cluster.)
local key = KEYS[1]
local alive = ARGV[4]
-- The caller is alive: it is running this script.
local lapsed = redis.call('SET', alive .. ARGV[5], '1', 'PX', ARGV[6], 'GET') == false
lapsed = lapsed and 1 or 0
local live = 0
for _, member in ipairs(redis.call('ZRANGE', key, 0, -1)) do
  local node = string.match(member, '^(.*):[^:]*$')
  if node and redis.call('EXISTS', alive .. node) == 1 then
    live = live + 1
  else
    redis.call('ZREM', key, member)
  end
end
if live >= tonumber(ARGV[2]) then
  return { 0, lapsed }
end
redis.call('ZADD', key, 0, ARGV[1])
redis.call('PEXPIRE', key, ARGV[3])
return { 1, lapsed }

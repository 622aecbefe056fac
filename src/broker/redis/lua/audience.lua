-- How many sockets each node has per channel, so a publish's `recipients` counts the whole
-- cluster: a hash of node -> "<expiry ms, Redis's clock> <count per channel ...>". Sets this
-- node's entry, drops entries of nodes that stopped reporting, answers the other live ones.
-- KEYS[1] = <prefix>:audience. ARGV: node, ttl (ms), this node's counts ("c0 c1 ...").
local key = KEYS[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', key, ARGV[1], (now + tonumber(ARGV[2])) .. ' ' .. ARGV[3])
local all = redis.call('HGETALL', key)
local others = {}
for i = 1, #all, 2 do
  local expiry = tonumber(string.match(all[i + 1], '^(%d+)'))
  if not expiry or expiry < now then
    redis.call('HDEL', key, all[i])
  elseif all[i] ~= ARGV[1] then
    others[#others + 1] = all[i + 1]
  end
end
return others

-- Idempotency-Key across the cluster: one key per caller's key, holding the request's
-- fingerprint and, once published, its receipt. Claiming is one step, so of two nodes racing
-- with one key exactly one gets 'new' and publishes.
-- KEYS[1] = <prefix>:idem:<caller>:<key>, a string: "P <fingerprint>" while its publish runs,
-- "D <fingerprint> <receipt JSON>" once answered.
-- ARGV[1] = 'claim' | 'done' | 'drop'; ARGV[2] = fingerprint (hex); ARGV[3] = TTL (ms);
-- ARGV[4] = receipt JSON ('done').
-- claim returns {'new'} (now claimed for ARGV[3] ms), {'pending'}, {'conflict'} or
-- {'repeat', receipt}; done and drop return {}.

local key, op, fp = KEYS[1], ARGV[1], ARGV[2]
local held = redis.call('GET', key)
local claimed = 'P ' .. fp

if op == 'claim' then
  if not held then
    redis.call('SET', key, claimed, 'PX', ARGV[3])
    return { 'new' }
  end
  if string.sub(held, 3, 2 + string.len(fp)) ~= fp then
    return { 'conflict' }
  end
  if held == claimed then
    return { 'pending' }
  end
  return { 'repeat', string.sub(held, 4 + string.len(fp)) }
end

-- Only this request's own claim is settled or dropped (or a claim that expired meanwhile).
if held and held ~= claimed then
  return {}
end
if op == 'done' then
  redis.call('SET', key, 'D ' .. fp .. ' ' .. ARGV[4], 'PX', ARGV[3])
elseif op == 'drop' and held then
  redis.call('DEL', key)
end
return {}

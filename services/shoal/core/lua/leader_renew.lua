-- leader_renew: take the leader lock if free, or extend it if we hold it.
-- KEYS[1] lock key
-- ARGV[1] our token, ARGV[2] ttl_ms
-- Returns 1 when we hold the lock afterwards, 0 otherwise.
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0

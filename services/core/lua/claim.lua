-- claim: give a worker up to n queued tasks, highest priority first, each with a lease.
-- KEYS[1] prefix
-- ARGV[1] worker_id, ARGV[2] n, ARGV[3] lease_ms, ARGV[4..] queues in the worker's order
-- Returns {now_ms, then 8 fields per task: id, name, queue, attempt, args, kwargs, timeout_s, enqueued_at}
local worker, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- A worker declared lost or stopped must register again before it gets work.
local wstate = redis.call('HGET', P .. ':worker:' .. worker, 'state')
if wstate == 'lost' or wstate == 'stopped' then return {NOW_MS} end

-- Promote a few due delayed tasks so delays do not depend on the leader's loop.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ':scheduled', '-inf', NOW_MS, 'LIMIT', 0, 50)) do
  redis.call('ZREM', P .. ':scheduled', id)
  if redis.call('HGET', tkey(id), 'state') == 'scheduled' then enqueue(id, 'scheduled', false) end
end

local out = {NOW_MS}
local wkey = P .. ':wtasks:' .. worker
for qi = 4, #ARGV do
  if n <= 0 then break end
  local popped = redis.call('ZPOPMIN', P .. ':ready:' .. ARGV[qi], n)
  for j = 1, #popped, 2 do
    local id = popped[j]
    local key = tkey(id)
    local h = redis.call('HMGET', key, 'state', 'name', 'queue', 'attempts', 'args', 'kwargs', 'timeout_s', 'enqueued_at', 'priority')
    if h[1] == 'queued' then
      redis.call('HINCRBY', P .. ':depth:' .. h[3], h[9], -1)
      local attempt = tonumber(h[4]) + 1
      redis.call('HSET', key, 'attempts', attempt, 'worker_id', worker, 'started_at', NOW_MS)
      set_state(id, 'queued', 'running')
      redis.call('ZADD', P .. ':leases', NOW_MS + lease, id)
      redis.call('SADD', wkey, id)
      out[#out + 1] = id
      out[#out + 1] = h[2]
      out[#out + 1] = h[3]
      out[#out + 1] = attempt
      out[#out + 1] = h[5]
      out[#out + 1] = h[6]
      out[#out + 1] = h[7]
      out[#out + 1] = h[8]
      n = n - 1
    end
  end
end
finish()
return out

-- claim: give a worker up to n queued tasks, highest priority first, each with a lease.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] worker_id, ARGV[2] n, ARGV[3] lease_ms, ARGV[4..] queues in the worker's order
-- Returns {now_ms, then 8 fields per task: id, name, queue, attempt, args, kwargs, timeout_s, enqueued_at}
local worker, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- A worker declared lost or stopped must register again before it gets work.
local wstate = redis.call('HGET', K_WORKER(worker), 'state')
if wstate == 'lost' or wstate == 'stopped' then return {NOW_MS} end

-- Promote a few due delayed tasks so delays do not depend on the leader's loop.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', NOW_MS, 'LIMIT', 0, 50)) do
  redis.call('ZREM', K_SCHEDULED, id)
  if redis.call('HGET', K_TASK(id), 'state') == 'scheduled' then enqueue(id, 'scheduled', false) end
end
flush_ready()

local out = {NOW_MS}
local leases, mine = {}, {}
local deadline = NOW_MS + lease
for qi = 4, #ARGV do
  if n <= 0 then break end
  -- A paused queue keeps its tasks; nothing is claimed from it until it is resumed.
  local popped = {}
  if redis.call('HEXISTS', K_PAUSED_QUEUES, ARGV[qi]) == 0 then
    popped = redis.call('ZPOPMIN', K_READY(ARGV[qi]), n)
  end
  for j = 1, #popped, 2 do
    local id = popped[j]
    local key = K_TASK(id)
    local h = redis.call('HMGET', key, 'state', 'name', 'queue', 'attempts', 'args', 'kwargs', 'timeout_s',
      'enqueued_at', 'priority')
    if h[1] == 'queued' then
      depth_add(h[3], h[9], -1)
      local attempt = tonumber(h[4]) + 1
      redis.call('HSET', key, 'attempts', attempt, 'worker_id', worker, 'started_at', NOW_MS, 'state', 'running')
      note_state(id, 'queued', 'running', h[3])
      leases[#leases + 1] = deadline
      leases[#leases + 1] = id
      mine[#mine + 1] = id
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
call_chunked('ZADD', K_LEASES, leases)
call_chunked('SADD', K_WORKER_TASKS(worker), mine)
finish()
return out

-- cancel: stop a task that has not finished; its pending dependents become upstream_failed.
-- KEYS[1] prefix
-- ARGV[1] task id, ARGV[2] retention_s
-- Returns {'ok', previous state} | {'notfound'} | {'conflict', state}
local id, retention = ARGV[1], tonumber(ARGV[2])
local key = tkey(id)
local h = redis.call('HMGET', key, 'state', 'queue', 'worker_id', 'priority')
local state = h[1]
if not state then return {'notfound'} end
if TERMINAL[state] then return {'conflict', state} end
if state == 'queued' then
  if redis.call('ZREM', P .. ':ready:' .. h[2], id) == 1 then
    redis.call('HINCRBY', P .. ':depth:' .. h[2], h[4], -1)
  end
elseif state == 'scheduled' then
  redis.call('ZREM', P .. ':scheduled', id)
elseif state == 'running' then
  -- The worker learns at its next heartbeat that the task is no longer its own and stops it;
  -- whatever it reports afterwards is refused by the state check in complete.
  redis.call('ZREM', P .. ':leases', id)
  redis.call('SREM', P .. ':wtasks:' .. (h[3] or ''), id)
end
redis.call('HSET', key, 'finished_at', NOW_MS, 'error', 'cancelled')
set_state(id, state, 'cancelled')
expire_task(id, retention)
cascade(id, retention)
finish()
return {'ok', state}

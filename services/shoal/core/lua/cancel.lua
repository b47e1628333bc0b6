-- cancel: stop a task that has not finished; its pending dependents become upstream_failed.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] task id, ARGV[2] retention_s, ARGV[3] (optional) comma-separated states the task
-- must be in (a bulk cancel leaves alone a task that moved on since it was matched)
-- Returns {'ok', previous state} | {'notfound'} | {'conflict', state}
local id, retention = ARGV[1], tonumber(ARGV[2])
local key = K_TASK(id)
local h = redis.call('HMGET', key, 'state', 'queue', 'worker_id', 'priority')
local state = h[1]
if not state then return {'notfound'} end
if TERMINAL[state] then return {'conflict', state} end
if ARGV[3] and ARGV[3] ~= '' and not string.find(',' .. ARGV[3] .. ',', ',' .. state .. ',', 1, true) then
  return {'conflict', state}
end
if state == 'queued' then
  if redis.call('ZREM', K_READY(h[2]), id) == 1 then
    redis.call('HINCRBY', K_DEPTH(h[2]), h[4], -1)
  end
elseif state == 'scheduled' then
  redis.call('ZREM', K_SCHEDULED, id)
elseif state == 'running' then
  -- The worker learns at its next heartbeat that the task is no longer its own and stops it;
  -- whatever it reports afterwards is refused by the state check in complete.
  redis.call('ZREM', K_LEASES, id)
  redis.call('SREM', K_WORKER_TASKS(h[3] or ''), id)
end
redis.call('HSET', key, 'finished_at', NOW_MS, 'error', 'cancelled')
set_state(id, state, 'cancelled')
expire_task(id, retention)
cascade(id, retention)
finish()
return {'ok', state}

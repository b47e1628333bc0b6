-- cancel: stop a task that has not finished; its pending dependents become upstream_failed.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] task id, ARGV[2] (optional) comma-separated states the task must be in (a bulk
-- cancel leaves alone a task that moved on since it was matched)
-- Returns {'ok', previous state, fan-out items left for the caller to drain} | {'notfound'} |
-- {'conflict', state}
local id = ARGV[1]
local t = get_task(id)
if not t then return {'notfound'} end
local state = t[R_STATE]
if TERMINAL[state] then return {'conflict', state} end
if ARGV[2] and ARGV[2] ~= '' and not string.find(',' .. ARGV[2] .. ',', ',' .. state .. ',', 1, true) then
  return {'conflict', state}
end
if state == 'queued' then
  if unready(id, t) == 1 then depth_add(t[R_QUEUE], t[R_PRIORITY], -1) end
elseif state == 'scheduled' then
  redis.call('ZREM', K_SCHEDULED, id)
elseif state == 'running' then
  -- The worker learns at its next heartbeat that the task is no longer its own and stops it;
  -- whatever it reports afterwards is refused by the state check in complete.
  redis.call('ZREM', K_LEASES, id)
  redis.call('ZREM', K_WORKER_TASKS, t[R_WORKER_ID] .. M_SEP .. id)
end
finish_task(id, t, 'cancelled', 'cancelled')
fan_out_of('c', id, t)
local left = finish()
return {'ok', state, left}

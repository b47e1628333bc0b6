-- heartbeat: a worker is alive; renew the leases of the tasks it still runs.
-- KEYS: the namespace's fixed keys (generated prelude), then the worker's hash
-- ARGV[1] worker_id, ARGV[2] lease_ms, ARGV[3] running, ARGV[4] processed, ARGV[5] failed,
-- ARGV[6..] ids the worker believes it runs
-- Returns {drain (1/0), known (1/0), lost ids...}: lost ids are no longer this worker's
-- (cancelled, reaped or handed to another worker); known=0 means the worker must register again.
local worker, lease = ARGV[1], tonumber(ARGV[2])
local wstate = redis.call('HGET', K_WORKER, 'state')
local known = wstate and wstate ~= 'lost' and wstate ~= 'stopped'
local out = {0, known and 1 or 0}
if known then
  redis.call('ZADD', K_WORKERS, NOW_MS, worker)
  redis.call('HSET', K_WORKER, 'last_heartbeat', NOW_MS, 'running', ARGV[3], 'processed', ARGV[4], 'failed', ARGV[5])
  if redis.call('HGET', K_WORKER, 'drain') == '1' then out[1] = 1 end
end
for i = 6, #ARGV do
  local id = ARGV[i]
  if known and redis.call('ZSCORE', K_WORKER_TASKS, worker .. M_SEP .. id) then
    redis.call('ZADD', K_LEASES, 'XX', NOW_MS + lease, id)
  else
    out[#out + 1] = id
  end
end
return out

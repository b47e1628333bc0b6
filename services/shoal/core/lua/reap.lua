-- reap: tasks whose lease ran out (their worker stopped renewing) are retried after a
-- backoff, or failed for good once their attempts are spent.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] limit, ARGV[2] retention_s, ARGV[3] backoff_base_ms, ARGV[4] backoff_max_ms,
-- ARGV[5] random seed (jitter)
-- Returns the number of tasks reaped.
local limit, retention = tonumber(ARGV[1]), tonumber(ARGV[2])
local base, max = tonumber(ARGV[3]), tonumber(ARGV[4])
math.randomseed(tonumber(ARGV[5]))
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW_MS, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', K_LEASES, id)
  local key = K_TASK(id)
  local h = redis.call('HMGET', key, 'state', 'worker_id', 'attempts', 'attempt_limit', 'started_at')
  if h[1] == 'running' then
    local attempt = tonumber(h[3])
    local err = 'lease expired: worker ' .. (h[2] or '?') .. ' stopped renewing it'
    redis.call('SREM', K_WORKER_TASKS(h[2] or ''), id)
    push_history(id, attempt, h[2], 'lease_expired', err, tonumber(h[5]))
    redis.call('HSET', key, 'error', err)
    retry_or_fail(id, attempt, tonumber(h[4]), backoff_ms(attempt, base, max, math.random()), retention, false)
  end
end
finish()
return #expired

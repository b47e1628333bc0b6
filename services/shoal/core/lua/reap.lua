-- reap: tasks whose lease ran out (their worker stopped renewing) are retried after a
-- backoff, or failed for good once their attempts are spent.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] limit, ARGV[2] backoff_base_ms, ARGV[3] backoff_max_ms, ARGV[4] random seed (jitter)
-- Returns {tasks reaped, fan-out items left for the caller to drain}.
local limit = tonumber(ARGV[1])
local base, max = tonumber(ARGV[2]), tonumber(ARGV[3])
math.randomseed(tonumber(ARGV[4]))
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW_MS, 'LIMIT', 0, limit)
if #expired > 0 then call_chunked('ZREM', K_LEASES, expired) end
load_tasks(expired)
local gone = {}
for _, id in ipairs(expired) do
  local t = REC[id]
  if t and t[R_STATE] == 'running' then
    local attempt, worker = tonumber(t[R_ATTEMPTS]), t[R_WORKER_ID]
    local err = 'lease expired: worker ' .. worker .. ' stopped renewing it'
    gone[#gone + 1] = worker .. M_SEP .. id
    push_history(id, attempt, worker, 'lease_expired', err, tonumber(t[R_STARTED_AT]))
    put_side(K_ERRORS, id, err)
    retry_or_fail(id, t, attempt, tonumber(t[R_ATTEMPT_LIMIT]), backoff_ms(attempt, base, max, math.random()), false)
  end
end
if #gone > 0 then call_chunked('ZREM', K_WORKER_TASKS, gone) end
local left = finish()
return {#expired, left}

-- complete: record the ends of attempts reported by one worker, fenced by attempt number.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] worker_id, ARGV[2] retention_s, ARGV[3] number of outcomes, then 8 fields each:
--   id, attempt, ok (1/0), result_json, error, traceback, retry (1/0), retry_delay_ms
--   (retry_delay_ms is already backoff-with-jitter, computed by the caller)
-- Returns one 1/0 per outcome: 0 means refused (the attempt is no longer current).
local worker, retention, n = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local F = 8
local accepted = {}
local samples = {}
local done_leases, not_mine = {}, {}

for i = 0, n - 1 do
  local b = 4 + i * F
  local id, attempt = ARGV[b], tonumber(ARGV[b + 1])
  local key = K_TASK(id)
  local h = redis.call('HMGET', key, 'state', 'attempts', 'attempt_limit', 'started_at', 'enqueued_at',
    'worker_id', 'idempotency_key', 'has_hist', 'has_dependents', 'queue')
  if h[1] ~= 'running' or tonumber(h[2]) ~= attempt or h[6] ~= worker then
    -- Refused: a stale attempt. If this worker holds a newer attempt, it keeps it.
    if h[1] ~= 'running' or h[6] ~= worker then not_mine[#not_mine + 1] = id end
    accepted[#accepted + 1] = 0
  else
    accepted[#accepted + 1] = 1
    not_mine[#not_mine + 1] = id
    done_leases[#done_leases + 1] = id
    local started = tonumber(h[4])
    samples[#samples + 1] = string.format('%d,%d', started - tonumber(h[5]), NOW_MS - started)
    if ARGV[b + 2] == '1' then
      redis.call('HSET', key, 'result', ARGV[b + 3], 'finished_at', NOW_MS, 'error', '', 'traceback', '',
        'state', 'succeeded')
      note_state(id, 'running', 'succeeded', h[10])
      expire_task(id, retention, h[7], h[8])
      if h[9] then release_dependents(id) end
    else
      local err, tb = ARGV[b + 4], ARGV[b + 5]
      push_history(id, attempt, worker, 'failed', err, started)
      redis.call('HSET', key, 'error', err, 'traceback', tb)
      -- retry=0: the task raised Fail, so this attempt is its last whatever the budget says.
      local limit = ARGV[b + 6] == '1' and tonumber(h[3]) or attempt
      retry_or_fail(id, attempt, limit, tonumber(ARGV[b + 7]), retention, false)
    end
  end
end
call_chunked('SREM', K_WORKER_TASKS(worker), not_mine)
call_chunked('ZREM', K_LEASES, done_leases)
call_chunked('LPUSH', K_STATS_SAMPLES, samples)
if #samples > 0 then redis.call('LTRIM', K_STATS_SAMPLES, 0, 4999) end
finish()
return accepted

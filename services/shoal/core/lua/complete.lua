-- complete: record the ends of attempts reported by one worker, fenced by attempt number.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] worker_id, ARGV[2] number of outcomes, then 8 fields each:
--   id, attempt, ok (1/0), result_json, error, traceback, retry (1/0, 2: the task raised Retry),
--   retry_delay_ms
--   (retry_delay_ms is already backoff-with-jitter, computed by the caller)
-- Returns {fan-out items left for the caller to drain, then one 1/0 per outcome: 0 means
-- refused (the attempt is no longer current)}.
local worker, n = ARGV[1], tonumber(ARGV[2])
local F = 8
local out = {0}
local samples = {}
local done_leases, not_mine = {}, {}

local ids = {}
for i = 0, n - 1 do ids[#ids + 1] = ARGV[3 + i * F] end
load_tasks(ids)
for i = 0, n - 1 do
  local b = 3 + i * F
  local id, attempt = ARGV[b], tonumber(ARGV[b + 1])
  local t = REC[id]
  local current = t and t[R_STATE] == 'running' and t[R_WORKER_ID] == worker
  if not current or tonumber(t[R_ATTEMPTS]) ~= attempt then
    -- Refused: a stale attempt. If this worker holds a newer attempt, it keeps it.
    if not current then not_mine[#not_mine + 1] = worker .. M_SEP .. id end
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    not_mine[#not_mine + 1] = worker .. M_SEP .. id
    done_leases[#done_leases + 1] = id
    local started = tonumber(t[R_STARTED_AT])
    samples[#samples + 1] = string.format('%d,%d', started - tonumber(t[R_ENQUEUED_AT]), NOW_MS - started)
    if ARGV[b + 2] == '1' then
      put_side(K_RESULTS, id, ARGV[b + 3])
      if attempt > 1 then  -- only an earlier attempt can have left an error behind
        put_side(K_ERRORS, id, false)
        put_side(K_TRACEBACKS, id, false)
      end
      finish_task(id, t, 'succeeded', nil)
      fan_out_of('r', id, t)
    else
      local err, tb = ARGV[b + 4], ARGV[b + 5]
      -- retry=0: the task raised Fail, so this attempt is its last whatever the budget says.
      local limit = ARGV[b + 6] ~= '0' and tonumber(t[R_ATTEMPT_LIMIT]) or attempt
      -- retry=2: it raised Retry; while attempts remain, that attempt was retried, not failed.
      local outcome = (ARGV[b + 6] == '2' and attempt < limit) and 'retried' or 'failed'
      push_history(id, attempt, worker, outcome, err, started)
      put_side(K_ERRORS, id, err)
      put_side(K_TRACEBACKS, id, tb)
      retry_or_fail(id, t, attempt, limit, tonumber(ARGV[b + 7]), false)
    end
  end
end
if #not_mine > 0 then call_chunked('ZREM', K_WORKER_TASKS, not_mine) end
if #done_leases > 0 then call_chunked('ZREM', K_LEASES, done_leases) end
if #samples > 0 then
  call_chunked('LPUSH', K_STATS_SAMPLES, samples)
  redis.call('LTRIM', K_STATS_SAMPLES, 0, 4999)
end
out[1] = finish()
return out

-- release: take running tasks back from a worker now, instead of waiting for their leases.
-- Used for a graceful hand-back (SIGTERM: the attempt does not count against max_retries)
-- and when a worker is known dead (pod gone, heartbeat lost: the attempt counts, so a task
-- that kills its worker every time ends up failed rather than looping forever).
-- KEYS: the namespace's fixed keys (generated prelude), then the worker's hash
-- ARGV[1] worker_id, ARGV[2] reason, ARGV[3] counts (1/0), ARGV[4] worker state to set ('' keeps it),
-- ARGV[5] silent_ms: when > 0, act only if the worker's last heartbeat is older than that (so a
-- worker that just came back is left alone),
-- ARGV[6] started_before_ms: when > 0, act only if the run of the worker registered under this
-- id started before that (a restarted container's new run keeps the id and is spared),
-- ARGV[7..] ids (none = every task of the worker)
-- Returns {'alive'} when silent_ms spared the worker, {'newer'} when started_before_ms did,
-- else {fan-out items left for the caller to drain, then the ids released}.
local worker, reason, counts, wstate = ARGV[1], ARGV[2], ARGV[3] == '1', ARGV[4]
local silent = tonumber(ARGV[5])
if silent > 0 then
  local last = tonumber(redis.call('ZSCORE', K_WORKERS, worker) or '0')
  if last > NOW_MS - silent then return {'alive'} end
end
local born_before = tonumber(ARGV[6])
if born_before > 0 then
  local started = tonumber(redis.call('HGET', K_WORKER, 'started_at') or '0')
  if started >= born_before then return {'newer'} end
end
local mine_lo, mine_hi = '[' .. worker .. M_SEP, '(' .. worker .. '\1'
local ids = {}
if #ARGV >= 7 then
  for i = 7, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  local skip = #worker + 2
  for i, m in ipairs(redis.call('ZRANGEBYLEX', K_WORKER_TASKS, mine_lo, mine_hi)) do
    ids[i] = string.sub(m, skip)
  end
end
load_tasks(ids)
local out = {0}
local gone, leases = {}, {}
for _, id in ipairs(ids) do
  local t = REC[id]
  gone[#gone + 1] = worker .. M_SEP .. id
  if t and t[R_STATE] == 'running' and t[R_WORKER_ID] == worker then
    leases[#leases + 1] = id
    local attempt = tonumber(t[R_ATTEMPTS])
    push_history(id, attempt, worker, 'released', reason, tonumber(t[R_STARTED_AT]))
    if not counts then
      t[R_ATTEMPT_LIMIT] = tonumber(t[R_ATTEMPT_LIMIT]) + 1
      enqueue(id, t, true)
    else
      put_side(K_ERRORS, id, reason)
      retry_or_fail(id, t, attempt, tonumber(t[R_ATTEMPT_LIMIT]), 0, true)
    end
    out[#out + 1] = id
  end
end
if #gone > 0 then call_chunked('ZREM', K_WORKER_TASKS, gone) end
if #leases > 0 then call_chunked('ZREM', K_LEASES, leases) end
if wstate ~= '' and redis.call('EXISTS', K_WORKER) == 1 then
  redis.call('HSET', K_WORKER, 'state', wstate)
  if wstate == 'lost' or wstate == 'stopped' then
    redis.call('ZREM', K_WORKERS, worker)
    redis.call('EXPIRE', K_WORKER, 3600)
    redis.call('ZREMRANGEBYLEX', K_WORKER_TASKS, mine_lo, mine_hi)
    publish_event(cjson.encode({kind = 'worker', ts = NOW_MS / 1000, worker_id = worker, event = wstate, reason = reason}))
  end
end
out[1] = finish()
return out

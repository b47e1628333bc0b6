-- release: take running tasks back from a worker now, instead of waiting for their leases.
-- Used for a graceful hand-back (SIGTERM: the attempt does not count against max_retries)
-- and when a worker is known dead (pod gone, heartbeat lost: the attempt counts, so a task
-- that kills its worker every time ends up failed rather than looping forever).
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] worker_id, ARGV[2] reason, ARGV[3] counts (1/0), ARGV[4] retention_s,
-- ARGV[5] worker state to set ('' keeps it), ARGV[6] silent_ms: when > 0, act only if the
-- worker's last heartbeat is older than that (so a worker that just came back is left alone),
-- ARGV[7] started_before_ms: when > 0, act only if the run of the worker registered under this
-- id started before that (a restarted container's new run keeps the id and is spared),
-- ARGV[8..] ids (none = every task of the worker)
-- Returns the ids released, {'alive'} when silent_ms spared the worker, {'newer'} when
-- started_before_ms did.
local worker, reason, counts, retention, wstate = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4]), ARGV[5]
local silent = tonumber(ARGV[6])
if silent > 0 then
  local last = tonumber(redis.call('ZSCORE', K_WORKERS, worker) or '0')
  if last > NOW_MS - silent then return {'alive'} end
end
local born_before = tonumber(ARGV[7])
if born_before > 0 then
  local started = tonumber(redis.call('HGET', K_WORKER(worker), 'started_at') or '0')
  if started >= born_before then return {'newer'} end
end
local tasks = K_WORKER_TASKS(worker)
local ids = {}
if #ARGV >= 8 then
  for i = 8, #ARGV do ids[#ids + 1] = ARGV[i] end
else
  ids = redis.call('SMEMBERS', tasks)
end
local out = {}
for _, id in ipairs(ids) do
  local key = K_TASK(id)
  local h = redis.call('HMGET', key, 'state', 'worker_id', 'attempts', 'attempt_limit', 'started_at')
  redis.call('SREM', tasks, id)
  if h[1] == 'running' and h[2] == worker then
    redis.call('ZREM', K_LEASES, id)
    local attempt = tonumber(h[3])
    push_history(id, attempt, worker, 'released', reason, tonumber(h[5]))
    if not counts then
      redis.call('HINCRBY', key, 'attempt_limit', 1)
      enqueue(id, 'running', true)
    else
      redis.call('HSET', key, 'error', reason)
      retry_or_fail(id, attempt, tonumber(h[4]), 0, retention, true)
    end
    out[#out + 1] = id
  end
end
if wstate ~= '' and redis.call('EXISTS', K_WORKER(worker)) == 1 then
  redis.call('HSET', K_WORKER(worker), 'state', wstate)
  if wstate == 'lost' or wstate == 'stopped' then
    redis.call('ZREM', K_WORKERS, worker)
    redis.call('EXPIRE', K_WORKER(worker), 3600)
    redis.call('DEL', tasks)
    local ev = cjson.encode({kind = 'worker', ts = NOW_MS / 1000, worker_id = worker, event = wstate, reason = reason})
    publish(K_EVENTS_CHANNEL, ev)
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', 2000, '*', 'e', ev)
  end
end
finish()
return out

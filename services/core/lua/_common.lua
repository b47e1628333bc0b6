-- Helpers shared by every script; scripts.py prepends this file to each of them.
-- KEYS[1] is always the namespace prefix ("{ns}"): every key is built from it and
-- shares its hash tag, so all keys of a namespace live in one Redis Cluster slot.
local P = KEYS[1]
local DEAD = {failed = true, cancelled = true, upstream_failed = true}
local TERMINAL = {succeeded = true, failed = true, cancelled = true, upstream_failed = true}

local function tkey(id) return P .. ':task:' .. id end

local NOW_MS
do
  local t = redis.call('TIME')
  NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Monotonic virtual clock in microseconds: FIFO order within a priority even
-- when many tasks are queued in the same millisecond.
local VCLOCK = nil
local function next_vseq()
  if VCLOCK == nil then
    VCLOCK = math.max(NOW_MS * 1000, tonumber(redis.call('GET', P .. ':vclock') or '0'))
  end
  VCLOCK = VCLOCK + 1
  return VCLOCK
end
local function save_vclock()
  if VCLOCK ~= nil then redis.call('SET', P .. ':vclock', string.format('%.0f', VCLOCK)) end
end

local CHANGES = {}
local WOKEN = {}
local DONE = {}

local function set_state(id, old, new)
  if old and old ~= '' and old ~= new then redis.call('ZREM', P .. ':state:' .. old, id) end
  redis.call('ZADD', P .. ':state:' .. new, NOW_MS, id)
  redis.call('HSET', tkey(id), 'state', new)
  CHANGES[#CHANGES + 1] = {id, new}
  if TERMINAL[new] then DONE[new] = (DONE[new] or 0) + 1 end
end

-- Terminal tasks and their side keys live for the retention period, then expire.
local function expire_task(id, retention)
  redis.call('EXPIRE', tkey(id), retention)
  redis.call('EXPIRE', P .. ':hist:' .. id, retention)
  -- The idempotency key lives exactly as long as its task.
  local idem = redis.call('HGET', tkey(id), 'idempotency_key')
  if idem and idem ~= '' then redis.call('EXPIRE', P .. ':idem:' .. idem, retention) end
end

local function enqueue(id, old, keep_position)
  local h = redis.call('HMGET', tkey(id), 'queue', 'rank_offset', 'vseq', 'priority')
  local vseq = tonumber(h[3])
  if not keep_position or vseq == nil then vseq = next_vseq() end
  redis.call('ZADD', P .. ':ready:' .. h[1], vseq - tonumber(h[2]), id)
  redis.call('HINCRBY', P .. ':depth:' .. h[1], h[4], 1)
  redis.call('HSET', tkey(id), 'enqueued_at', NOW_MS, 'vseq', vseq, 'scheduled_for', '')
  set_state(id, old, 'queued')
  WOKEN[h[1]] = true
end

local function schedule(id, old, delay_ms)
  local due = NOW_MS + delay_ms
  redis.call('ZADD', P .. ':scheduled', due, id)
  redis.call('HSET', tkey(id), 'scheduled_for', due)
  set_state(id, old, 'scheduled')
end

-- A dependency failed for good: every pending task downstream of it is upstream_failed.
local function cascade(root, retention)
  local stack = {root}
  while #stack > 0 do
    local id = table.remove(stack)
    local dkey = P .. ':deps:' .. id
    for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
      if redis.call('HGET', tkey(dep), 'state') == 'pending' then
        redis.call('HSET', tkey(dep), 'error', 'dependency ' .. id .. ' did not succeed', 'finished_at', NOW_MS)
        set_state(dep, 'pending', 'upstream_failed')
        expire_task(dep, retention)
        stack[#stack + 1] = dep
      end
    end
    redis.call('DEL', dkey)
  end
end

-- A task succeeded: its dependents lose one unmet dependency; the last one releases them.
local function release_dependents(id)
  local dkey = P .. ':deps:' .. id
  for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
    -- Only pending dependents wait; a cancelled one may even have expired already.
    if redis.call('HGET', tkey(dep), 'state') == 'pending'
        and redis.call('HINCRBY', tkey(dep), 'deps_left', -1) <= 0 then
      local delay = tonumber(redis.call('HGET', tkey(dep), 'delay_ms') or '0')
      if delay > 0 then schedule(dep, 'pending', delay) else enqueue(dep, 'pending', false) end
    end
  end
  redis.call('DEL', dkey)
end

local function push_history(id, attempt, worker, state, err, started)
  redis.call('RPUSH', P .. ':hist:' .. id, cjson.encode({
    attempt = attempt, worker_id = worker, state = state, error = err,
    started_at = started, finished_at = NOW_MS}))
end

local function backoff_ms(attempt, base_ms, max_ms, jitter)
  if base_ms <= 0 then return 0 end
  local cap = math.min(max_ms, base_ms * (2 ^ math.min(60, math.max(0, attempt - 1))))
  return math.floor(cap * jitter)
end

-- One event per script call, however many tasks it moved; then wake idle workers.
local function finish()
  save_vclock()
  if #CHANGES > 0 then
    local ev = cjson.encode({kind = 'task', ts = NOW_MS / 1000, changes = CHANGES})
    redis.call('PUBLISH', P .. ':events', ev)
    redis.call('XADD', P .. ':events', 'MAXLEN', '~', 2000, '*', 'e', ev)
  end
  local bucket = nil
  for state, n in pairs(DONE) do
    bucket = bucket or (P .. ':stats:done:' .. math.floor(NOW_MS / 10000))
    redis.call('HINCRBY', bucket, state, n)
  end
  if bucket then redis.call('EXPIRE', bucket, 7200) end
  for q, _ in pairs(WOKEN) do redis.call('PUBLISH', P .. ':wake:' .. q, '1') end
end

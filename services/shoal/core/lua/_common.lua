-- Helpers shared by every script; scripts.py prepends the generated key prelude and this
-- file to each of them. KEYS[1..K_FIXED_COUNT] are the namespace's fixed keys (K_SCHEDULED,
-- K_LEASES, ...); every other name comes from a prelude function (K_TASK(id), ...), never
-- from a literal here. All of them share the namespace's hash tag (one Redis Cluster slot).
--
-- Writes to shared sets (the state indexes, ready sets, queue depth counters) are collected
-- while a script runs and applied by finish() in a few multi-member commands: with batches
-- of hundreds of tasks per call, that is most of the difference in Redis CPU per task.
local DEAD = {failed = true, cancelled = true, upstream_failed = true}
local TERMINAL = {succeeded = true, failed = true, cancelled = true, upstream_failed = true}


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
    VCLOCK = math.max(NOW_MS * 1000, tonumber(redis.call('GET', K_VCLOCK) or '0'))
  end
  VCLOCK = VCLOCK + 1
  return VCLOCK
end

local CHANGES = {}  -- {id, new state} per transition, published by finish() in events of 100
local WOKEN = {}    -- queues that got work: idle workers are signalled
local DONE = {}     -- terminal transitions by state, for throughput stats
local MOVES = {}    -- id -> {state before this script, state now, queue if known}: coalesced
local MOVED = {}    -- ids in MOVES, in order
local READY = {}    -- queue -> {score, id, ...} to add to its ready set
local DEPTH = {}    -- queue -> priority -> change of the queue depth counter
-- Non-terminal states also counted per queue (the ready ones are the queue's sorted set).
local PER_QUEUE = {running = true, scheduled = true}

-- Record a transition whose 'state' field the caller writes itself (in its own HSET).
-- A caller that has the task's queue at hand passes it, saving a lookup at finish().
local function note_state(id, old, new, queue)
  local m = MOVES[id]
  if m then
    m[2] = new
    m[3] = m[3] or queue
  else
    MOVES[id] = {old or '', new, queue}
    MOVED[#MOVED + 1] = id
  end
  CHANGES[#CHANGES + 1] = {id, new}
  if TERMINAL[new] then DONE[new] = (DONE[new] or 0) + 1 end
end

local function set_state(id, old, new)
  redis.call('HSET', K_TASK(id), 'state', new)
  note_state(id, old, new)
end

local function depth_add(queue, priority, n)
  local d = DEPTH[queue]
  if not d then d = {}; DEPTH[queue] = d end
  d[priority] = (d[priority] or 0) + n
end

local function add_ready(id, queue, score, priority)
  local r = READY[queue]
  if not r then r = {}; READY[queue] = r end
  r[#r + 1] = score
  r[#r + 1] = id
  depth_add(queue, priority, 1)
  WOKEN[queue] = true
end

-- Commands with many members, in chunks that stay well inside Lua's stack.
local function call_chunked(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Terminal tasks and their side keys live for the retention period, then expire.
-- The idempotency key lives exactly as long as its task.
local function expire_task(id, retention, idem, has_hist)
  if idem == nil then
    local h = redis.call('HMGET', K_TASK(id), 'idempotency_key', 'has_hist')
    idem, has_hist = h[1], h[2]
  end
  redis.call('EXPIRE', K_TASK(id), retention)
  if has_hist then redis.call('EXPIRE', K_HISTORY(id), retention) end
  if idem and idem ~= '' then redis.call('EXPIRE', K_IDEMPOTENCY(idem), retention) end
end

local function enqueue(id, old, keep_position)
  local h = redis.call('HMGET', K_TASK(id), 'queue', 'rank_offset', 'vseq', 'priority')
  local vseq = tonumber(h[3])
  if not keep_position or vseq == nil then vseq = next_vseq() end
  add_ready(id, h[1], vseq - tonumber(h[2]), h[4])
  redis.call('HSET', K_TASK(id), 'state', 'queued', 'enqueued_at', NOW_MS, 'vseq', vseq, 'scheduled_for', '')
  note_state(id, old, 'queued', h[1])
end

local function schedule(id, old, delay_ms)
  local due = NOW_MS + delay_ms
  redis.call('ZADD', K_SCHEDULED, due, id)
  redis.call('HSET', K_TASK(id), 'scheduled_for', due, 'state', 'scheduled')
  note_state(id, old, 'scheduled')
end

-- A dependency failed for good: every pending task downstream of it is upstream_failed.
local function cascade(root, retention)
  local stack = {root}
  while #stack > 0 do
    local id = table.remove(stack)
    local dkey = K_DEPENDENTS(id)
    for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
      if redis.call('HGET', K_TASK(dep), 'state') == 'pending' then
        redis.call('HSET', K_TASK(dep), 'error', 'dependency ' .. id .. ' did not succeed', 'finished_at', NOW_MS)
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
  local dkey = K_DEPENDENTS(id)
  for _, dep in ipairs(redis.call('SMEMBERS', dkey)) do
    -- Only pending dependents wait; a cancelled one may even have expired already.
    if redis.call('HGET', K_TASK(dep), 'state') == 'pending'
        and redis.call('HINCRBY', K_TASK(dep), 'deps_left', -1) <= 0 then
      local delay = tonumber(redis.call('HGET', K_TASK(dep), 'delay_ms') or '0')
      if delay > 0 then schedule(dep, 'pending', delay) else enqueue(dep, 'pending', false) end
    end
  end
  redis.call('DEL', dkey)
end

local function push_history(id, attempt, worker, state, err, started)
  redis.call('RPUSH', K_HISTORY(id), cjson.encode({
    attempt = attempt, worker_id = worker, state = state, error = err,
    started_at = started, finished_at = NOW_MS}))
  redis.call('HSET', K_TASK(id), 'has_hist', 1)
end

-- An attempt ended without success: run again (after delay_ms, or at once — at the task's
-- old place when keep_position) while attempts remain, else fail for good and cascade.
local function retry_or_fail(id, attempt, limit, delay_ms, retention, keep_position)
  if attempt < limit then
    if delay_ms > 0 then schedule(id, 'running', delay_ms) else enqueue(id, 'running', keep_position) end
  else
    redis.call('HSET', K_TASK(id), 'finished_at', NOW_MS)
    set_state(id, 'running', 'failed')
    expire_task(id, retention)
    cascade(id, retention)
  end
end

local function backoff_ms(attempt, base_ms, max_ms, jitter)
  if base_ms <= 0 then return 0 end
  local cap = math.min(max_ms, base_ms * (2 ^ math.min(60, math.max(0, attempt - 1))))
  return math.floor(cap * jitter)
end

-- Apply pending ready-set additions now (claim pops right after promoting due tasks).
local function flush_ready()
  for queue, flat in pairs(READY) do call_chunked('ZADD', K_READY(queue), flat) end
  READY = {}
end

local function count_per_queue(counts, id, m)
  local queue = m[3] or redis.call('HGET', K_TASK(id), 'queue')
  if not queue then return end
  local c = counts[queue]
  if not c then c = {}; counts[queue] = c end
  if PER_QUEUE[m[1]] then c[m[1]] = (c[m[1]] or 0) - 1 end
  if PER_QUEUE[m[2]] then c[m[2]] = (c[m[2]] or 0) + 1 end
end

local function flush_batched_writes()
  local rem, add, per_queue = {}, {}, {}
  for _, id in ipairs(MOVED) do
    local m = MOVES[id]
    if m[1] ~= m[2] then
      if m[1] ~= '' then
        local r = rem[m[1]]
        if not r then r = {}; rem[m[1]] = r end
        r[#r + 1] = id
      end
      local a = add[m[2]]
      if not a then a = {}; add[m[2]] = a end
      a[#a + 1] = NOW_MS
      a[#a + 1] = id
      if PER_QUEUE[m[1]] or PER_QUEUE[m[2]] then count_per_queue(per_queue, id, m) end
    end
  end
  for state, ids in pairs(rem) do call_chunked('ZREM', K_STATE(state), ids) end
  for state, flat in pairs(add) do call_chunked('ZADD', K_STATE(state), flat) end
  for queue, by_state in pairs(per_queue) do
    for state, n in pairs(by_state) do
      if n ~= 0 then redis.call('HINCRBY', K_QUEUE_COUNTS(queue), state, n) end
    end
  end
  flush_ready()
  for queue, by_priority in pairs(DEPTH) do
    for priority, n in pairs(by_priority) do
      if n ~= 0 then redis.call('HINCRBY', K_DEPTH(queue), priority, n) end
    end
  end
  if VCLOCK ~= nil then redis.call('SET', K_VCLOCK, string.format('%.0f', VCLOCK)) end
end

-- One event per script call and per EVENT_CHANGES tasks it moved (so the stream, capped by
-- entries, stays bounded in bytes too: about 2,000 x 100 changes); then wake idle workers.
local EVENT_CHANGES = 100
local function finish()
  flush_batched_writes()
  for i = 1, #CHANGES, EVENT_CHANGES do
    local part = {unpack(CHANGES, i, math.min(i + EVENT_CHANGES - 1, #CHANGES))}
    local ev = cjson.encode({kind = 'task', ts = NOW_MS / 1000, changes = part})
    publish(K_EVENTS_CHANNEL, ev)
    redis.call('XADD', K_EVENTS, 'MAXLEN', '~', 2000, '*', 'e', ev)
  end
  local bucket = nil
  for state, n in pairs(DONE) do
    bucket = bucket or (K_STATS_BUCKET(math.floor(NOW_MS / 10000)))
    redis.call('HINCRBY', bucket, state, n)
  end
  if bucket then redis.call('EXPIRE', bucket, 7200) end
  for q, _ in pairs(WOKEN) do publish(K_WAKE(q), '1') end
end

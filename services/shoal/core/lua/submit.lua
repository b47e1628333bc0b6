-- submit: create tasks (one call per batch), in the order given.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] retention_s, ARGV[2] number of tasks, then 12 fields per task:
--   id, name, queue, priority, rank_offset_us, args_json, kwargs_json,
--   depends_on (comma-separated ids), max_retries, timeout_s, delay_ms, idempotency_key
-- Returns a flat list: id, state, created (1/0) per task; or {'err', message} and writes nothing.
local retention = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local F = 12

-- Pass 1: refuse the whole batch before writing anything.
local in_batch = {}
for i = 0, n - 1 do
  local b = 3 + i * F
  local id = ARGV[b]
  if redis.call('EXISTS', K_TASK(id)) == 1 or in_batch[id] then
    return {'err', 'duplicate task id ' .. id}
  end
  local deps = ARGV[b + 7]
  if deps ~= '' then
    for dep in string.gmatch(deps, '[^,]+') do
      if not in_batch[dep] and redis.call('EXISTS', K_TASK(dep)) == 0 then
        return {'err', 'unknown dependency ' .. dep}
      end
    end
  end
  in_batch[id] = true
end

local out = {}
local created = {}   -- NOW_MS, id, ... for the listing index
local queues = {}
-- A batch item whose idempotency key matched an existing task is an alias of that task:
-- later items that depend on it wait on the existing task instead.
local alias = {}
for i = 0, n - 1 do
  local b = 3 + i * F
  local id, idem = ARGV[b], ARGV[b + 11]
  local existing = nil
  if idem ~= '' then
    existing = redis.call('GET', K_IDEMPOTENCY(idem))
    if existing and redis.call('EXISTS', K_TASK(existing)) == 0 then existing = nil end
  end
  if existing then
    alias[id] = existing
    out[#out + 1] = existing
    out[#out + 1] = redis.call('HGET', K_TASK(existing), 'state')
    out[#out + 1] = 0
  else
    local queue, priority, rank_offset, deps = ARGV[b + 2], ARGV[b + 3], tonumber(ARGV[b + 4]), ARGV[b + 7]
    local max_retries = tonumber(ARGV[b + 8])
    local delay = tonumber(ARGV[b + 10])
    local left, dead, seen, resolved = 0, nil, {}, {}
    if deps ~= '' then
      for dep in string.gmatch(deps, '[^,]+') do
        dep = alias[dep] or dep
        if not seen[dep] then
          seen[dep] = true
          resolved[#resolved + 1] = dep
          local st = redis.call('HGET', K_TASK(dep), 'state')
          if DEAD[st] then
            dead = dep
          elseif st ~= 'succeeded' then
            redis.call('SADD', K_DEPENDENTS(dep), id)
            redis.call('HSET', K_TASK(dep), 'has_dependents', 1)
            left = left + 1
          end
        end
      end
    end
    local state
    local extra = {}
    if dead then
      state = 'upstream_failed'
      note_state(id, nil, 'upstream_failed')
      extra = {'error', 'dependency ' .. dead .. ' did not succeed', 'finished_at', NOW_MS}
    elseif left > 0 then
      state = 'pending'
      note_state(id, nil, 'pending')
    elseif delay > 0 then
      state = 'scheduled'
      note_state(id, nil, 'scheduled', queue)
      redis.call('ZADD', K_SCHEDULED, NOW_MS + delay, id)
      extra = {'scheduled_for', NOW_MS + delay}
    else
      state = 'queued'
      note_state(id, nil, 'queued')
      local vseq = next_vseq()
      add_ready(id, queue, vseq - rank_offset, priority)
      extra = {'enqueued_at', NOW_MS, 'vseq', vseq}
    end
    redis.call('HSET', K_TASK(id),
      'id', id, 'name', ARGV[b + 1], 'queue', queue, 'priority', priority,
      'rank_offset', rank_offset, 'args', ARGV[b + 5], 'kwargs', ARGV[b + 6],
      'depends_on', table.concat(resolved, ','), 'deps_left', left,
      'max_retries', max_retries, 'attempt_limit', max_retries + 1, 'attempts', 0,
      'timeout_s', ARGV[b + 9], 'delay_ms', delay, 'idempotency_key', idem,
      'created_at', NOW_MS, 'state', state, unpack(extra))
    created[#created + 1] = NOW_MS
    created[#created + 1] = id
    queues[queue] = true
    if dead then expire_task(id, retention, idem, false) end
    if idem ~= '' then
      if dead then
        redis.call('SET', K_IDEMPOTENCY(idem), id, 'EX', retention)
      else
        redis.call('SET', K_IDEMPOTENCY(idem), id)
      end
    end
    out[#out + 1] = id
    out[#out + 1] = state
    out[#out + 1] = 1
  end
end
call_chunked('ZADD', K_ALL_TASKS, created)
for q, _ in pairs(queues) do redis.call('SADD', K_QUEUES, q) end
finish()
return out

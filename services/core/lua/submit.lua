-- submit: create tasks (one call per batch), in the order given.
-- KEYS[1] prefix
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
  if redis.call('EXISTS', tkey(id)) == 1 or in_batch[id] then
    return {'err', 'duplicate task id ' .. id}
  end
  local deps = ARGV[b + 7]
  if deps ~= '' then
    for dep in string.gmatch(deps, '[^,]+') do
      if not in_batch[dep] and redis.call('EXISTS', tkey(dep)) == 0 then
        return {'err', 'unknown dependency ' .. dep}
      end
    end
  end
  in_batch[id] = true
end

local out = {}
-- A batch item whose idempotency key matched an existing task is an alias of that task:
-- later items that depend on it wait on the existing task instead.
local alias = {}
for i = 0, n - 1 do
  local b = 3 + i * F
  local id, idem = ARGV[b], ARGV[b + 11]
  local existing = nil
  if idem ~= '' then
    existing = redis.call('GET', P .. ':idem:' .. idem)
    if existing and redis.call('EXISTS', tkey(existing)) == 0 then existing = nil end
  end
  if existing then
    alias[id] = existing
    out[#out + 1] = existing
    out[#out + 1] = redis.call('HGET', tkey(existing), 'state')
    out[#out + 1] = 0
  else
    local queue, deps = ARGV[b + 2], ARGV[b + 7]
    local max_retries = tonumber(ARGV[b + 8])
    local delay = tonumber(ARGV[b + 10])
    redis.call('HSET', tkey(id),
      'id', id, 'name', ARGV[b + 1], 'queue', queue, 'priority', ARGV[b + 3],
      'rank_offset', ARGV[b + 4], 'args', ARGV[b + 5], 'kwargs', ARGV[b + 6],
      'depends_on', deps, 'max_retries', max_retries, 'attempt_limit', max_retries + 1,
      'attempts', 0, 'timeout_s', ARGV[b + 9], 'delay_ms', delay, 'idempotency_key', idem,
      'created_at', NOW_MS)
    redis.call('ZADD', P .. ':all', NOW_MS, id)
    redis.call('SADD', P .. ':queues', queue)
    local left, dead, seen, resolved = 0, nil, {}, {}
    if deps ~= '' then
      for dep in string.gmatch(deps, '[^,]+') do
        dep = alias[dep] or dep
        if not seen[dep] then
          seen[dep] = true
          resolved[#resolved + 1] = dep
          local st = redis.call('HGET', tkey(dep), 'state')
          if DEAD[st] then
            dead = dep
          elseif st ~= 'succeeded' then
            redis.call('SADD', P .. ':deps:' .. dep, id)
            left = left + 1
          end
        end
      end
    end
    redis.call('HSET', tkey(id), 'deps_left', left, 'depends_on', table.concat(resolved, ','))
    if dead then
      redis.call('HSET', tkey(id), 'error', 'dependency ' .. dead .. ' did not succeed', 'finished_at', NOW_MS)
      set_state(id, nil, 'upstream_failed')
      expire_task(id, retention)
    elseif left > 0 then
      set_state(id, nil, 'pending')
    elseif delay > 0 then
      schedule(id, nil, delay)
    else
      enqueue(id, nil, false)
    end
    if idem ~= '' then
      if dead then
        redis.call('SET', P .. ':idem:' .. idem, id, 'EX', retention)
      else
        redis.call('SET', P .. ':idem:' .. idem, id)
      end
    end
    out[#out + 1] = id
    out[#out + 1] = redis.call('HGET', tkey(id), 'state')
    out[#out + 1] = 1
  end
end
finish()
return out

-- submit: create tasks (one call per batch, or per chunk of a big one), in the order given.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] max live queues (0: no limit), ARGV[2] number of tasks, then 14 fields per task:
--   id, name, queue, priority, rank_offset_us, args_json, kwargs_json,
--   depends_on (comma-separated ids), max_retries, timeout_s, delay_ms, idempotency_key, flow_key, results_to
-- Returns a flat list: id, state, created (1/0) per task; or {'err', message} and writes nothing.
local max_queues = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local F = 14

-- Pass 1: refuse the whole batch before writing anything. One HMGET loads every task the
-- batch names (its own ids must be new; its dependencies must exist or come earlier).
local wanted, in_batch, new_queues = {}, {}, {}
for i = 0, n - 1 do
  local b = 3 + i * F
  wanted[#wanted + 1] = ARGV[b]
  local deps = ARGV[b + 7]
  if deps ~= '' then
    for dep in string.gmatch(deps, '[^,]+') do wanted[#wanted + 1] = dep end
  end
end
load_tasks(wanted)
for i = 0, n - 1 do
  local b = 3 + i * F
  local id = ARGV[b]
  if REC[id] or in_batch[id] then return {'err', 'duplicate task id ' .. id} end
  local deps = ARGV[b + 7]
  if deps ~= '' then
    for dep in string.gmatch(deps, '[^,]+') do
      if not in_batch[dep] and not REC[dep] then return {'err', 'unknown dependency ' .. dep} end
    end
  end
  in_batch[id] = true
  new_queues[ARGV[b + 2]] = true
end
if max_queues > 0 then
  local live, adding = redis.call('HLEN', K_LIVE_QUEUES), 0
  for _, _ in pairs(new_queues) do adding = adding + 1 end
  if live + adding > max_queues then  -- only then does it matter which queues are new
    adding = 0
    for q, _ in pairs(new_queues) do
      if redis.call('HEXISTS', K_LIVE_QUEUES, q) == 0 then adding = adding + 1 end
    end
    if adding > 0 and live + adding > max_queues then
      return {'err', 'too many queues: at most ' .. max_queues .. ' may hold unfinished tasks at once'}
    end
  end
end

local out = {}
local edges = {}     -- 0, parent NUL child, ... for K_EDGES
local past = {}      -- the same for K_PAST_EDGES: edges from a dependency that has ended already
local idem_new = {}  -- key, id, ... for K_IDEMPOTENCY
local idem_seen = {} -- key -> id created by this call
-- A batch item whose idempotency key matched an existing task is an alias of that task:
-- later items that depend on it wait on the existing task instead.
local alias = {}
for i = 0, n - 1 do
  local b = 3 + i * F
  local id, idem = ARGV[b], ARGV[b + 11]
  local existing = nil
  if idem ~= '' then
    existing = idem_seen[idem] or redis.call('HGET', K_IDEMPOTENCY, idem)
    if existing and not get_task(existing) then existing = nil end
  end
  if existing then
    alias[id] = existing
    out[#out + 1] = existing
    out[#out + 1] = REC[existing][R_STATE]
    out[#out + 1] = 0
  else
    local queue, deps, delay = ARGV[b + 2], ARGV[b + 7], tonumber(ARGV[b + 10])
    local left, dead, seen, resolved = 0, nil, {}, {}
    if deps ~= '' then
      for dep in string.gmatch(deps, '[^,]+') do
        dep = alias[dep] or dep
        if not seen[dep] then
          seen[dep] = true
          resolved[#resolved + 1] = dep
          local st = get_task(dep)[R_STATE]
          if TERMINAL[st] then
            if DEAD[st] then dead = dep end
            past[#past + 1] = 0  -- as its release or cascade would have left it
            past[#past + 1] = dep .. M_SEP .. id
            local parent = REC[dep]
            if parent[R_DEPENDENTS] == '' then
              parent[R_DEPENDENTS] = '1'  -- so that trim.lua drops the edge with it
              touch(dep)
            end
          else
            edges[#edges + 1] = 0
            edges[#edges + 1] = dep .. M_SEP .. id
            left = left + 1
            local parent = REC[dep]
            if parent[R_DEPENDENTS] == '' then
              parent[R_DEPENDENTS] = '1'
              touch(dep)
            end
          end
        end
      end
    end
    local max_retries = tonumber(ARGV[b + 8])
    local t = {}
    t[R_ATTEMPTS], t[R_ATTEMPT_LIMIT], t[R_WORKER_ID], t[R_STARTED_AT] = 0, max_retries + 1, '', ''
    t[R_ENQUEUED_AT], t[R_VSEQ], t[R_DEPS_LEFT], t[R_SCHEDULED_FOR], t[R_FINISHED_AT] = '', '', left, '', ''
    t[R_DEPENDENTS] = ''
    t[R_QUEUE], t[R_NAME], t[R_PRIORITY], t[R_RANK_OFFSET] = queue, ARGV[b + 1], ARGV[b + 3], ARGV[b + 4]
    t[R_CREATED] = string.format(CREATED_FORMAT, next_vseq())
    t[R_MAX_RETRIES], t[R_TIMEOUT_S], t[R_DELAY_MS], t[R_IDEMPOTENCY_KEY] = max_retries, ARGV[b + 9], delay, idem
    t[R_DEPENDS_ON], t[R_ARGS], t[R_KWARGS] = table.concat(resolved, ','), ARGV[b + 5], ARGV[b + 6]
    t[R_FLOW_KEY], t[R_RESULTS_TO] = ARGV[b + 12], ARGV[b + 13]
    local state
    create_task(id, t)
    if dead then
      finish_task(id, t, 'upstream_failed', 'dependency ' .. dead .. ' did not succeed')
    elseif left > 0 then
      set_state(id, t, 'pending')
    elseif delay > 0 then
      schedule(id, t, delay)
    else
      enqueue(id, t, false)
    end
    local state = t[R_STATE]
    if idem ~= '' then
      idem_seen[idem] = id
      idem_new[#idem_new + 1] = idem
      idem_new[#idem_new + 1] = id
    end
    out[#out + 1] = id
    out[#out + 1] = state
    out[#out + 1] = 1
  end
end
if #edges > 0 then call_chunked('ZADD', K_EDGES, edges) end
if #past > 0 then call_chunked('ZADD', K_PAST_EDGES, past) end
if #idem_new > 0 then call_chunked('HSET', K_IDEMPOTENCY, idem_new) end
finish()
return out

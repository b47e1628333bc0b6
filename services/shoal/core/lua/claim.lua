-- claim: give a worker up to n queued tasks, each with a lease, within the flow rules.
-- KEYS: the namespace's fixed keys (generated prelude), then the worker's hash
-- ARGV[1] worker_id, ARGV[2] n, ARGV[3] lease_ms, ARGV[4..] queues in the worker's order
-- Returns {now_ms, held, then 9 fields per task: id, name, queue, attempt, args, kwargs,
-- timeout_s, enqueued_at, attempt_limit}; held: flat scope, reason ('concurrency' | 'rate'), tasks, ... of
-- the limits that held tasks back in this call, cjson-encoded ('' when none did).
--
-- Within a queue the claim walks its participants round robin: the keyless ready set (K_READY)
-- and the groups of K_FLOW_GROUPS (a flow key, or a task name whose keyless tasks met its
-- limit and were parked), each giving up to its weight per round, starting after the group
-- served last (K_FLOW_CURSOR). A participant that may not start its next task is left for
-- this call; the others go on (no head-of-line blocking). A queue with no groups and no rules
-- anywhere is claimed exactly as before: the first n of its ready set.
local worker, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- A worker declared lost or stopped must register again before it gets work.
local wstate = redis.call('HGET', K_WORKER, 'state')
if wstate == 'lost' or wstate == 'stopped' then return {NOW_MS, ''} end

-- Promote a few due delayed tasks so delays do not depend on the leader's loop.
promote_due(50)
flush_ready()

local out = {NOW_MS, ''}
local leases, mine = {}, {}
local deadline = NOW_MS + lease
local HUGE = math.huge
-- Groups visited per queue and call: bounds the cost of a claim whatever the number of keys.
local VISIT = math.max(64, 4 * n)
-- Keyless tasks a call may look at (and park, when their name is at a limit) per queue.
local SCAN = 1000

-- The task's kwargs, with its dependencies' results (in depends_on order) under `results_to`;
-- nil and their size when they are over MAX_DEPENDENCY_RESULTS_BYTES.
local function kwargs_of(t)
  local name = t[R_RESULTS_TO]
  if name == '' then return t[R_KWARGS] end
  local deps = {}
  for dep in string.gmatch(t[R_DEPENDS_ON], '[^,]+') do deps[#deps + 1] = dep end
  local parts, size = {}, 0
  for i = 1, #deps, 1000 do
    local rows = redis.call('HMGET', K_RESULTS, unpack(deps, i, math.min(i + 999, #deps)))
    for j = 1, math.min(1000, #deps - i + 1) do
      local r = rows[j] or 'null'  -- a result the retention already dropped
      size = size + #r + 1
      parts[#parts + 1] = r
    end
  end
  if size > MAX_DEPENDENCY_RESULTS_BYTES then return nil, size end
  local list = '[' .. table.concat(parts, ',') .. ']'
  local kwargs = t[R_KWARGS]
  if kwargs == '{}' then return '{"' .. name .. '":' .. list .. '}' end
  return '{"' .. name .. '":' .. list .. ',' .. string.sub(kwargs, 2)
end

-- Start task t on this worker; nil when it failed at once instead (its inputs are too big).
local function take(id, t, queue)
  depth_add(queue, t[R_PRIORITY], -1)
  local attempt = tonumber(t[R_ATTEMPTS]) + 1
  t[R_ATTEMPTS], t[R_WORKER_ID], t[R_STARTED_AT] = attempt, worker, NOW_MS
  set_state(id, t, 'running')
  local kwargs, size = kwargs_of(t)
  if kwargs == nil then
    local err = 'the results of its dependencies take ' .. size .. ' bytes as JSON; results_to takes at most '
      .. MAX_DEPENDENCY_RESULTS_BYTES
    push_history(id, attempt, worker, 'failed', err, NOW_MS)
    finish_task(id, t, 'failed', err)
    fan_out_of('c', id, t)
    return nil
  end
  leases[#leases + 1] = deadline
  leases[#leases + 1] = id
  mine[#mine + 1] = 0
  mine[#mine + 1] = worker .. M_SEP .. id
  out[#out + 1] = id
  out[#out + 1] = t[R_NAME]
  out[#out + 1] = queue
  out[#out + 1] = attempt
  out[#out + 1] = t[R_ARGS]
  out[#out + 1] = kwargs
  out[#out + 1] = t[R_TIMEOUT_S]
  out[#out + 1] = t[R_ENQUEUED_AT]
  out[#out + 1] = t[R_ATTEMPT_LIMIT]
  n = n - 1
  return attempt
end

-- ------------------------------------------------------------------ rules
local RULES_ON = redis.call('HLEN', K_FLOW_RULES) > 0
local RULES = {}     -- scope -> {concurrency | nil, rate | nil, period_ms | nil, weight} or false
local BASE = {}      -- scope -> running count before this call
local WINDOW = {}    -- scope -> starts in the rate window before this call
local STARTED = {}   -- scope -> starts by this call
local STARTS = {}    -- 0, member, ... for K_FLOW_STARTS
local HELD = {}      -- scope NUL reason -> tasks held back

local function rule_of(scope)
  if not RULES_ON then return false end
  local r = RULES[scope]
  if r == nil then
    r = false
    local s = redis.call('HGET', K_FLOW_RULES, scope)
    if s then
      local c, rate, period, weight = string.match(s, '^(%d*),(%d*),(%d*),(%d*)$')
      r = {tonumber(c), tonumber(rate), tonumber(period), tonumber(weight) or 1}
    end
    RULES[scope] = r
  end
  return r
end

-- A key's rule and its scope: its own, else the one of its prefix (`key:tenant:*` for the key
-- `tenant:42`), which limits each key under it on its own.
local function key_rule(key)
  local own = 'key:' .. key
  local r = rule_of(own)
  if r then return r, own end
  local prefix = string.match(key, '^([^:]*):')
  if prefix then
    local scope = 'key:' .. prefix .. ':*'
    r = rule_of(scope)
    if r then return r, scope end
  end
  return false, own
end

-- How many more tasks of `scope` may start now under rule `r`, and which limit binds.
local function allowance(scope, r)
  if not r then return HUGE, nil end
  local a, why = HUGE, nil
  if r[1] then
    local base = BASE[scope]
    if base == nil then
      base = tonumber(redis.call('HGET', K_FLOW_RUNNING, scope) or '0')
      BASE[scope] = base
    end
    a, why = r[1] - base - running_delta(scope), 'concurrency'
  end
  if r[2] then
    local w = WINDOW[scope]
    if w == nil then
      local lo = '[' .. scope .. M_SEP
      -- Starts at or before now - period are out of the window.
      local cut = '(' .. scope .. M_SEP .. string.format('%012x', NOW_MS - r[3] + 1)
      redis.call('ZREMRANGEBYLEX', K_FLOW_STARTS, lo, cut)
      w = redis.call('ZLEXCOUNT', K_FLOW_STARTS, lo, '(' .. scope .. '\1')
      WINDOW[scope] = w
    end
    local left = r[2] - w - (STARTED[scope] or 0)
    if left < a then a, why = left, 'rate' end
  end
  return a, why
end

local function hold(scope, why)
  local f = scope .. M_SEP .. why
  HELD[f] = (HELD[f] or 0) + 1
end

-- The scope (and reason, and the rule's scope) that keeps task t from starting now, or nil.
local function blocked(t)
  local qs = 'queue:' .. t[R_QUEUE]
  local a, why = allowance(qs, rule_of(qs))
  if a <= 0 then return qs, why, qs end
  local ns = 'name:' .. t[R_NAME]
  a, why = allowance(ns, rule_of(ns))
  if a <= 0 then return ns, why, ns end
  local key = t[R_FLOW_KEY]
  if key ~= '' then
    local r, rscope = key_rule(key)
    a, why = allowance('key:' .. key, r)
    if a <= 0 then return 'key:' .. key, why, rscope end
  end
  return nil
end

-- Record a start in the window of every rate-limited scope of the task.
local function spend(id, t, attempt)
  local scopes = {'queue:' .. t[R_QUEUE], 'name:' .. t[R_NAME]}
  local rules = {rule_of(scopes[1]), rule_of(scopes[2])}
  if t[R_FLOW_KEY] ~= '' then
    scopes[3] = 'key:' .. t[R_FLOW_KEY]
    rules[3] = key_rule(t[R_FLOW_KEY])
  end
  for i, scope in ipairs(scopes) do
    local r = rules[i]
    if r and r[2] then
      STARTED[scope] = (STARTED[scope] or 0) + 1
      STARTS[#STARTS + 1] = 0
      STARTS[#STARTS + 1] = scope .. M_SEP .. string.format('%012x', NOW_MS) .. M_SEP .. id .. ':' .. attempt
    end
  end
end

-- ------------------------------------------------------------------ one queue
-- The queue's groups in rotation order: those after the cursor, the keyless set (''), then
-- the groups up to the cursor; at most VISIT of them.
local function rotation(queue)
  local head = queue .. M_SEP
  local hi = '(' .. queue .. '\1'
  local cursor = redis.call('HGET', K_FLOW_CURSOR, queue)
  local order = {}
  local skip = #head + 1
  local lo = (cursor and cursor ~= '') and ('(' .. head .. cursor) or ('[' .. head)
  for _, m in ipairs(redis.call('ZRANGEBYLEX', K_FLOW_GROUPS, lo, hi, 'LIMIT', 0, VISIT)) do
    order[#order + 1] = string.sub(m, skip)
  end
  local any = #order > 0
  if #order < VISIT then
    order[#order + 1] = ''
    if cursor and cursor ~= '' then
      local before = redis.call('ZRANGEBYLEX', K_FLOW_GROUPS, '[' .. head, '[' .. head .. cursor, 'LIMIT', 0, VISIT - #order)
      for _, m in ipairs(before) do order[#order + 1] = string.sub(m, skip) end
      any = any or #before > 0
    end
  end
  return order, any
end

-- Today's claim: the first n of the queue's keyless ready set.
local function claim_plain(queue)
  local popped = redis.call('ZRANGEBYLEX', K_READY, '[' .. queue .. M_SEP, '(' .. queue .. '\1', 'LIMIT', 0, n)
  if #popped == 0 then return end
  redis.call('ZREMRANGEBYLEX', K_READY, '[' .. popped[1], '[' .. popped[#popped])
  local skip = #queue + 2 + READY_HEX_DIGITS
  local ids = {}
  for j, m in ipairs(popped) do ids[j] = string.sub(m, skip) end
  load_tasks(ids)
  for _, id in ipairs(ids) do
    local t = REC[id]
    if t and t[R_STATE] == 'queued' then take(id, t, queue) end
  end
end

-- More of a participant's tasks once a call used what it fetched: a group's, up to what its
-- limits allow; the keyless set's, after tasks it parked, up to SCAN members in all.
local function refill(p)
  if not p.full then return false end
  local count
  if p.group == '' then
    if p.parked == 0 or #p.members >= SCAN then return false end
    count = math.min(n, SCAN - #p.members)
  else
    count = math.min(n, p.gate - #p.members)
    if count <= 0 then return false end
  end
  local more = redis.call('ZRANGEBYLEX', p.set, '(' .. p.members[#p.members], p.hi, 'LIMIT', 0, count)
  p.full = #more == count
  if #more == 0 then return false end
  local ids = {}
  for _, m in ipairs(more) do
    p.members[#p.members + 1] = m
    p.ids[#p.ids + 1] = string.sub(m, p.skip)
    ids[#ids + 1] = p.ids[#p.ids]
  end
  load_tasks(ids)
  return true
end

-- Members claimed, parked or found stale, by ready set: removed once per call.
local GONE = {}
local function gone(set, member)
  local list = GONE[set]
  if not list then list = {}; GONE[set] = list end
  list[#list + 1] = member
end

local function claim_flow(queue, order)
  local parts = {}
  local all_ids = {}
  local qa = allowance('queue:' .. queue, rule_of('queue:' .. queue))
  if qa <= 0 then return end
  local want = math.min(n, qa)
  -- Visit groups in turn until their first round would fill the claim; fetch a round's worth
  -- of each (refill fetches more when later rounds need it).
  local first_round = 0
  for _, g in ipairs(order) do
    if first_round >= want then break end
    local p = {group = g, weight = 1, pos = 1, parked = 0}
    local gate = HUGE
    if g == '' then
      p.set = K_READY
      p.lo, p.hi = '[' .. queue .. M_SEP, '(' .. queue .. '\1'
      p.skip = #queue + 2 + READY_HEX_DIGITS
    else
      p.set = K_FLOW_READY
      p.lo, p.hi = '[' .. queue .. M_SEP .. g .. M_SEP, '(' .. queue .. M_SEP .. g .. '\1'
      p.skip = #queue + #g + 3 + READY_HEX_DIGITS
      if string.byte(g, 1) == 2 then
        local scope = 'name:' .. string.sub(g, 2)
        local why
        gate, why = allowance(scope, rule_of(scope))
        if gate <= 0 then hold(scope, why) end
      else
        local r, rscope = key_rule(g)
        if r then p.weight = r[4] end
        local why
        gate, why = allowance('key:' .. g, r)
        if gate <= 0 then hold(rscope, why) end
      end
    end
    if gate > 0 then
      p.gate = gate
      local count = g == '' and want or math.min(want, gate, p.weight)
      p.members = redis.call('ZRANGEBYLEX', p.set, p.lo, p.hi, 'LIMIT', 0, count)
      p.full = #p.members == count
      first_round = first_round + math.min(#p.members, p.weight)
      p.ids = {}
      for j, m in ipairs(p.members) do
        p.ids[j] = string.sub(m, p.skip)
        all_ids[#all_ids + 1] = p.ids[j]
      end
      if #p.members == 0 and g ~= '' then redis.call('ZREM', K_FLOW_GROUPS, queue .. M_SEP .. g) end
      if #p.members > 0 then parts[#parts + 1] = p end
    end
  end
  if #parts == 0 then return end
  load_tasks(all_ids)
  local last = nil
  local queue_blocked = false
  local progress = true
  while n > 0 and progress and not queue_blocked do
    progress = false
    for _, p in ipairs(parts) do
      if n <= 0 or queue_blocked then break end
      local given = 0
      while not p.stopped and given < p.weight and n > 0 do
        if p.pos > #p.ids and not refill(p) then break end
        local id = p.ids[p.pos]
        local t = REC[id]
        if not t or t[R_STATE] ~= 'queued' then
          gone(p.set, p.members[p.pos])  -- a stale member: its task moved on
          p.pos = p.pos + 1
        else
          local scope, why, rscope = blocked(t)
          if scope == nil then
            gone(p.set, p.members[p.pos])
            p.pos = p.pos + 1
            local attempt = take(id, t, queue)
            if attempt then spend(id, t, attempt) end
            given = given + 1
            progress = true
            last = p.group
          elseif string.sub(scope, 1, 6) == 'queue:' then
            hold(scope, why)
            queue_blocked = true
            break
          elseif p.group == '' and string.sub(scope, 1, 5) == 'name:' then
            -- Parked in its name's group, so the keyless tasks behind it are not held up.
            hold(scope, why)
            gone(p.set, p.members[p.pos])
            p.pos = p.pos + 1
            p.parked = p.parked + 1
            flow_add(id, t, '\2' .. t[R_NAME])
          else
            hold(rscope, why)
            p.stopped = true
          end
        end
      end
    end
  end
  for set, members in pairs(GONE) do call_chunked('ZREM', set, members) end
  GONE = {}
  for _, p in ipairs(parts) do
    if p.group ~= '' and not p.full and p.pos > #p.ids then
      redis.call('ZREM', K_FLOW_GROUPS, queue .. M_SEP .. p.group)
    end
  end
  if last ~= nil then redis.call('HSET', K_FLOW_CURSOR, queue, last) end
end

-- No group anywhere and no rule: every queue is claimed as before, at two commands' cost.
local FLOW_ON = RULES_ON or redis.call('EXISTS', K_FLOW_GROUPS) == 1
for qi = 4, #ARGV do
  if n <= 0 then break end
  local queue = ARGV[qi]
  -- A paused queue keeps its tasks; nothing is claimed from it until it is resumed.
  if redis.call('HEXISTS', K_PAUSED_QUEUES, queue) == 0 then
    if FLOW_ON then
      local order, grouped = rotation(queue)
      if grouped or RULES_ON then claim_flow(queue, order) else claim_plain(queue) end
    else
      claim_plain(queue)
    end
  end
end
if #leases > 0 then
  call_chunked('ZADD', K_LEASES, leases)
  call_chunked('ZADD', K_WORKER_TASKS, mine)
end
if #STARTS > 0 then call_chunked('ZADD', K_FLOW_STARTS, STARTS) end
local held = {}
for f, count in pairs(HELD) do
  local scope, why = string.match(f, '^(.*)%z(%a+)$')
  held[#held + 1] = scope
  held[#held + 1] = why
  held[#held + 1] = count
end
if #held > 0 then out[2] = cjson.encode(held) end
finish()
return out

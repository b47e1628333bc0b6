-- Helpers shared by every transition script; scripts.py prepends the generated prelude
-- (key names K_*, record fields R_*, member constants) and this file to each of them.
--
-- Every key a script touches is one of the namespace's fixed keys in KEYS (plus K_WORKER,
-- the calling worker's hash, when the script gets one): tasks are records in K_TASKS,
-- queues and states are ranges of lexicographic sorted sets. Nothing here builds a key.
--
-- A script loads the records it needs (one HMGET per batch), changes them as Lua tables and
-- finish() writes back every changed record with one HSET, and applies the index changes
-- collected meanwhile in a few multi-member commands: with batches of hundreds of tasks per
-- call, that is most of the difference in Redis CPU per task.
--
-- What a call changes lives in the tables below, which begin() makes afresh at the start of
-- every call: in a library of Redis Functions this file runs once, when it is loaded.
local DEAD = {failed = true, cancelled = true, upstream_failed = true}
local TERMINAL = {succeeded = true, failed = true, cancelled = true, upstream_failed = true}

local NOW_MS

-- Monotonic virtual clock in microseconds: FIFO order within a priority even when many
-- tasks are queued in the same millisecond; also each task's unique creation stamp.
local VCLOCK
local function next_vseq()
  if VCLOCK == nil then
    VCLOCK = math.max(NOW_MS * 1000, tonumber(redis.call('GET', K_VCLOCK) or '0'))
  end
  VCLOCK = VCLOCK + 1
  return VCLOCK
end

-- Commands with many arguments, in chunks that stay well inside Lua's stack.
local function call_chunked(cmd, key, list, step)
  step = step or 1000
  for i = 1, #list, step do
    redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
  end
end

-- ------------------------------------------------------------------ task records
local REC           -- id -> record (table of R_COUNT strings), or false: no such task
local DIRTY         -- ids whose record finish() writes back, in order
local IS_DIRTY

local function load_tasks(ids)
  local want = {}
  for _, id in ipairs(ids) do
    if REC[id] == nil then want[#want + 1] = id end
  end
  for i = 1, #want, 1000 do
    local part = {unpack(want, i, math.min(i + 999, #want))}
    local rows = redis.call('HMGET', K_TASKS, unpack(part))
    for j, id in ipairs(part) do
      local s = rows[j]
      REC[id] = s and {string.match(s, R_PATTERN)} or false
    end
  end
end

local function get_task(id)
  if REC[id] == nil then load_tasks({id}) end
  return REC[id] or nil
end

local function touch(id)
  if not IS_DIRTY[id] then
    IS_DIRTY[id] = true
    DIRTY[#DIRTY + 1] = id
  end
end

-- Side values (result, error, traceback, history) by hash: id -> text, or false to delete.
local SIDE
local function put_side(key, id, value)
  local s = SIDE[key]
  if not s then s = {}; SIDE[key] = s end
  s[id] = value
end

local function index_member(id, t)
  return t[R_QUEUE] .. M_SEP .. t[R_NAME] .. M_SEP .. t[R_CREATED] .. id
end

local function ready_member(id, t)
  local order = tonumber(t[R_VSEQ]) - tonumber(t[R_RANK_OFFSET]) + READY_OFFSET
  return t[R_QUEUE] .. M_SEP .. string.format(READY_FORMAT, order) .. id
end

-- ------------------------------------------------------------------ state changes
local CHANGES  -- {id, new state} per transition, published by finish() in events of 100
local WOKEN    -- queues that got work: idle workers are signalled
local DONE     -- terminal transitions by state, for throughput stats
local FIRST    -- id -> its state before this script ('' for a task created by it)
local MOVED    -- ids in FIRST, in order
local READY    -- ready-set members to add: 0, member, 0, member, ...
local DEPTH    -- queue NUL priority -> change of the queue's ready count at that priority

-- ------------------------------------------------------------------ flow control
-- Every script keeps the running count of each task's scopes (queue:, name:, key:) in
-- K_FLOW_RUNNING as attempts start and end (set_state), whatever the rules say, so a rule
-- added or changed while tasks run finds the counts right. Tasks with a flow key wait in
-- K_FLOW_READY by (queue, key) instead of K_READY; claim.lua walks those groups round robin.
local RUNNING      -- scope -> change of its running count (filled by finish from these:)
local RUN_Q, RUN_N, RUN_K  -- queue / name / flow key -> change, per task no concatenation
local FLOW_READY   -- 0, member, ... to add to K_FLOW_READY
local FLOW_GROUPS  -- queue NUL group -> true: groups that got ready tasks
local FLOW_WAKE    -- whether an attempt that ends wakes its queue (rules exist), once known

local function running_add(t, n)
  local q, nm, k = t[R_QUEUE], t[R_NAME], t[R_FLOW_KEY]
  RUN_Q[q] = (RUN_Q[q] or 0) + n
  RUN_N[nm] = (RUN_N[nm] or 0) + n
  if k ~= '' then RUN_K[k] = (RUN_K[k] or 0) + n end
end

-- The change of one scope's running count in this script so far ('queue:q', 'name:n', 'key:k').
local function running_delta(scope)
  local kind, target = string.match(scope, '^(%a+):(.*)$')
  local of = kind == 'queue' and RUN_Q or kind == 'name' and RUN_N or kind == 'key' and RUN_K
  return of[target] or 0
end

-- RUNNING as one table of scopes, for finish().
local function running_changes()
  for q, n in pairs(RUN_Q) do RUNNING['queue:' .. q] = n end
  for nm, n in pairs(RUN_N) do RUNNING['name:' .. nm] = n end
  for k, n in pairs(RUN_K) do RUNNING['key:' .. k] = n end
  return RUNNING
end

-- Claim order within a queue: priority (aged), then FIFO; hex of fixed width.
local function ready_order(t)
  return string.format(READY_FORMAT, tonumber(t[R_VSEQ]) - tonumber(t[R_RANK_OFFSET]) + READY_OFFSET)
end

-- The fair-share group a queued task waits in: its flow key, or (parked there by a claim that
-- found its task name at a limit) '\2' .. name, which no flow key can be.
local function flow_member(id, t, group)
  return t[R_QUEUE] .. M_SEP .. group .. M_SEP .. ready_order(t) .. id
end

local function flow_add(id, t, group)
  FLOW_READY[#FLOW_READY + 1] = 0
  FLOW_READY[#FLOW_READY + 1] = flow_member(id, t, group)
  FLOW_GROUPS[t[R_QUEUE] .. M_SEP .. group] = true
end

-- The one place a task's state changes (and create_task, which starts it at '').
local function set_state(id, t, new)
  if not TRANSITIONS[t[R_STATE] .. '>' .. new] then
    error('illegal transition of task ' .. id .. ': ' .. t[R_STATE] .. ' -> ' .. new)
  end
  local old = t[R_STATE]
  if new == 'running' then
    running_add(t, 1)
  elseif old == 'running' then
    running_add(t, -1)
    -- A freed slot may let a held task start: wake the queue's idle workers.
    if FLOW_WAKE == nil then FLOW_WAKE = redis.call('HLEN', K_FLOW_RULES) > 0 end
    if FLOW_WAKE or t[R_FLOW_KEY] ~= '' then WOKEN[t[R_QUEUE]] = true end
  end
  if FIRST[id] == nil then
    FIRST[id] = t[R_STATE]
    MOVED[#MOVED + 1] = id
  end
  t[R_STATE] = new
  touch(id)
  CHANGES[#CHANGES + 1] = {id, new}
  if TERMINAL[new] then DONE[new] = (DONE[new] or 0) + 1 end
end

-- A task this script creates: `t` holds every other field; the caller sets its first state.
local function create_task(id, t)
  REC[id] = t
  FIRST[id] = ''
  MOVED[#MOVED + 1] = id
  t[R_STATE] = ''
end

local function depth_add(queue, priority, n)
  local f = queue .. M_SEP .. priority
  DEPTH[f] = (DEPTH[f] or 0) + n
end

local function enqueue(id, t, keep_position)
  if not keep_position or t[R_VSEQ] == '' then t[R_VSEQ] = string.format('%.0f', next_vseq()) end
  t[R_ENQUEUED_AT] = NOW_MS
  t[R_SCHEDULED_FOR] = ''
  if t[R_FLOW_KEY] ~= '' then
    flow_add(id, t, t[R_FLOW_KEY])
  else
    READY[#READY + 1] = 0
    READY[#READY + 1] = ready_member(id, t)
  end
  depth_add(t[R_QUEUE], t[R_PRIORITY], 1)
  WOKEN[t[R_QUEUE]] = true
  set_state(id, t, 'queued')
end

local SCHEDULE  -- due, id, ... to add to K_SCHEDULED
local function schedule(id, t, delay_ms)
  local due = NOW_MS + delay_ms
  SCHEDULE[#SCHEDULE + 1] = due
  SCHEDULE[#SCHEDULE + 1] = id
  t[R_SCHEDULED_FOR] = due
  set_state(id, t, 'scheduled')
end

local function finish_task(id, t, state, err)
  t[R_FINISHED_AT] = NOW_MS
  if err then put_side(K_ERRORS, id, err) end
  set_state(id, t, state)
end

local function push_history(id, attempt, worker, state, err, started)
  local entry = cjson.encode({
    attempt = attempt, worker_id = worker, state = state, error = err,
    started_at = started, finished_at = NOW_MS})
  local s = SIDE[K_HISTORY] and SIDE[K_HISTORY][id]
  if s == nil then s = redis.call('HGET', K_HISTORY, id) end
  put_side(K_HISTORY, id, s and (string.sub(s, 1, -2) .. ',' .. entry .. ']') or ('[' .. entry .. ']'))
end

local function backoff_ms(attempt, base_ms, max_ms, jitter)
  if base_ms <= 0 then return 0 end
  local cap = math.min(max_ms, base_ms * (2 ^ math.min(60, math.max(0, attempt - 1))))
  return math.floor(cap * jitter)
end

-- ------------------------------------------------------------------ fan-out in bounded chunks
-- Releasing a succeeded task's dependents and cascading a failure through a DAG touch one
-- record per edge. A call does at most FANOUT_CHUNK edges; the work left over goes to
-- K_FANOUT, which the caller (then the leader, if the caller died) drains with fanout.lua.
local FAN       -- work items of this call: {mode, id}; 'r' release, 'c' cascade
local FAN_NEXT
local BUDGET
local FAN_LEFT  -- items this call left in K_FANOUT

local function fan_out(mode, id) FAN[#FAN + 1] = {mode, id} end

-- The end of a task fans out to its dependents, if it ever had any.
local function fan_out_of(mode, id, t)
  if t[R_DEPENDENTS] ~= '' then fan_out(mode, id) end
end

local function run_fanout()
  while FAN_NEXT <= #FAN and BUDGET > 0 do
    local mode, parent = FAN[FAN_NEXT][1], FAN[FAN_NEXT][2]
    BUDGET = BUDGET - 1
    local lo, hi = '[' .. parent .. M_SEP, '(' .. parent .. '\1'
    local edges = redis.call('ZRANGEBYLEX', K_EDGES, lo, hi, 'LIMIT', 0, BUDGET)
    if #edges > 0 then
      BUDGET = BUDGET - #edges
      redis.call('ZREMRANGEBYLEX', K_EDGES, '[' .. edges[1], '[' .. edges[#edges])
      local skip = #parent + 2
      local children = {}
      for i, e in ipairs(edges) do children[i] = string.sub(e, skip) end
      load_tasks(children)
      for _, child in ipairs(children) do
        local t = REC[child]
        -- Only pending dependents wait; one cancelled meanwhile is left as it is.
        if t and t[R_STATE] == 'pending' then
          if mode == 'r' then
            local left = tonumber(t[R_DEPS_LEFT]) - 1
            t[R_DEPS_LEFT] = left
            touch(child)
            if left <= 0 then
              local delay = tonumber(t[R_DELAY_MS])
              if delay > 0 then schedule(child, t, delay) else enqueue(child, t, false) end
            end
          else
            finish_task(child, t, 'upstream_failed', 'dependency ' .. parent .. ' did not succeed')
            fan_out_of('c', child, t)
          end
        end
      end
      -- The edges it went through stay listed (a task's dependents; what a retry with
      -- dependents walks back, retry.lua).
      local past = {}
      for _, e in ipairs(edges) do
        past[#past + 1] = 0
        past[#past + 1] = e
      end
      call_chunked('ZADD', K_PAST_EDGES, past)
    end
    -- A full chunk may have more edges behind it: keep the item, the budget is spent anyway.
    if BUDGET > 0 then FAN_NEXT = FAN_NEXT + 1 end
  end
  if FAN_NEXT <= #FAN then
    local left = {}
    for i = FAN_NEXT, #FAN do left[#left + 1] = FAN[i][1] .. M_SEP .. FAN[i][2] end
    call_chunked('LPUSH', K_FANOUT, left)
    FAN_LEFT = #left
  end
  FAN, FAN_NEXT = {}, 1
end

-- An attempt ended without success: run again (after delay_ms, or at once — at the task's
-- old place when keep_position) while attempts remain, else fail for good and cascade.
local function retry_or_fail(id, t, attempt, limit, delay_ms, keep_position)
  if attempt < limit then
    if delay_ms > 0 then schedule(id, t, delay_ms) else enqueue(id, t, keep_position) end
  else
    finish_task(id, t, 'failed', nil)
    fan_out_of('c', id, t)
  end
end

-- Apply pending ready-set additions now (claim pops right after promoting due tasks).
local function flush_ready()
  if #READY > 0 then call_chunked('ZADD', K_READY, READY) end
  READY = {}
  if #FLOW_READY > 0 then
    call_chunked('ZADD', K_FLOW_READY, FLOW_READY)
    local groups = {}
    for g, _ in pairs(FLOW_GROUPS) do
      groups[#groups + 1] = 0
      groups[#groups + 1] = g
    end
    call_chunked('ZADD', K_FLOW_GROUPS, groups)
    FLOW_READY, FLOW_GROUPS = {}, {}
  end
end

-- Take a queued task out of whichever ready set holds it; 1 if it was there.
local function unready(id, t)
  if t[R_FLOW_KEY] == '' and redis.call('ZREM', K_READY, ready_member(id, t)) == 1 then return 1 end
  local group = t[R_FLOW_KEY] ~= '' and t[R_FLOW_KEY] or ('\2' .. t[R_NAME])
  return redis.call('ZREM', K_FLOW_READY, flow_member(id, t, group))
end

local function promote_due(limit)
  local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', NOW_MS, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  call_chunked('ZREM', K_SCHEDULED, due)
  load_tasks(due)
  local n = 0
  for _, id in ipairs(due) do
    local t = REC[id]
    if t and t[R_STATE] == 'scheduled' then
      enqueue(id, t, false)
      n = n + 1
    end
  end
  return n
end

-- ------------------------------------------------------------------ finish
local function add_count(counts, key, n)
  counts[key] = (counts[key] or 0) + n
end

local function apply_counts(key, counts)
  for field, n in pairs(counts) do
    if n ~= 0 and redis.call('HINCRBY', key, field, n) <= 0 then redis.call('HDEL', key, field) end
  end
end

-- Each state's index is made of (queue, name) ranges; K_RANGES lists the non-empty ones
-- (field: state NUL queue NUL name) with an upper bound of their newest creation stamp, so
-- a listing that merges ranges reads them from one hash and opens only those that can hold
-- the newest tasks. `entered`: state -> pair -> newest creation stamp that entered it (or
-- true when only new tasks did: a new task's stamp is the newest there is, no need to look).
local function flush_ranges(left, entered, created)
  for state, pairs_ in pairs(entered) do
    for pair, newest in pairs(pairs_) do
      local field = state .. M_SEP .. pair
      local fresh = created[state] and created[state][pair]
      if fresh and fresh >= newest then
        redis.call('HSET', K_RANGES, field, fresh)
      else
        local bound = redis.call('HGET', K_RANGES, field)
        if not bound or bound < newest then redis.call('HSET', K_RANGES, field, newest) end
      end
    end
  end
  for state, pairs_ in pairs(left) do
    local index = K_STATE[state]
    for pair, _ in pairs(pairs_) do
      if redis.call('ZLEXCOUNT', index, '[' .. pair .. M_SEP, '(' .. pair .. '\1') == 0 then
        redis.call('HDEL', K_RANGES, state .. M_SEP .. pair)
      end
    end
  end
end

local function flush_moves()
  local rem, add, done_add, done_rem, live = {}, {}, {}, {}, {}
  -- state -> (queue NUL name) -> true / newest creation stamp (of all, of new tasks)
  local left, entered, created = {}, {}, {}
  for _, id in ipairs(MOVED) do
    local t, old = REC[id], FIRST[id]
    local new = t[R_STATE]
    if old ~= new then
      local member = index_member(id, t)
      local pair = t[R_QUEUE] .. M_SEP .. t[R_NAME]
      if old ~= '' then
        local r = rem[old]
        if not r then r = {}; rem[old] = r; left[old] = {} end
        r[#r + 1] = member
        left[old][pair] = true
      end
      local a = add[new]
      if not a then a = {}; add[new] = a; entered[new] = {} end
      a[#a + 1] = 0
      a[#a + 1] = member
      local e = entered[new]
      if not e[pair] or e[pair] < t[R_CREATED] then e[pair] = t[R_CREATED] end
      if old == '' then
        local c = created[new]
        if not c then c = {}; created[new] = c end
        if not c[pair] or c[pair] < t[R_CREATED] then c[pair] = t[R_CREATED] end
      end
      -- The live-queue counts and the retention index follow the moves in and out of the end.
      if TERMINAL[new] and not TERMINAL[old] then
        done_add[#done_add + 1] = t[R_FINISHED_AT]
        done_add[#done_add + 1] = id
        if old ~= '' then add_count(live, t[R_QUEUE], -1) end
      elseif TERMINAL[old] and not TERMINAL[new] then
        done_rem[#done_rem + 1] = id
        add_count(live, t[R_QUEUE], 1)
      elseif old == '' and not TERMINAL[new] then
        add_count(live, t[R_QUEUE], 1)
      end
    end
  end
  for state, members in pairs(rem) do call_chunked('ZREM', K_STATE[state], members) end
  for state, flat in pairs(add) do call_chunked('ZADD', K_STATE[state], flat) end
  flush_ranges(left, entered, created)
  if #done_add > 0 then call_chunked('ZADD', K_DONE, done_add) end
  if #done_rem > 0 then call_chunked('ZREM', K_DONE, done_rem) end
  apply_counts(K_LIVE_QUEUES, live)
end

local function flush_records()
  local flat = {}
  for _, id in ipairs(DIRTY) do
    flat[#flat + 1] = id
    flat[#flat + 1] = table.concat(REC[id], R_SEP)
  end
  if #flat > 0 then call_chunked('HSET', K_TASKS, flat) end
  for key, values in pairs(SIDE) do
    local set, del = {}, {}
    for id, v in pairs(values) do
      if v then
        set[#set + 1] = id
        set[#set + 1] = v
      else
        del[#del + 1] = id
      end
    end
    if #set > 0 then call_chunked('HSET', key, set) end
    if #del > 0 then call_chunked('HDEL', key, del) end
  end
end

-- Every event leaves through here (live channel + capped stream).
local function publish_event(ev)
  publish(C_EVENTS, ev)
  redis.call('XADD', K_EVENTS, 'MAXLEN', '~', 2000, '*', 'e', ev)
end

-- One event per script call and per EVENT_CHANGES tasks it moved (so the stream, capped by
-- entries, stays bounded in bytes too: about 2,000 x 100 changes); then wake idle workers.
local EVENT_CHANGES = 100
local function finish()
  run_fanout()
  if #SCHEDULE > 0 then call_chunked('ZADD', K_SCHEDULED, SCHEDULE) end
  flush_ready()
  flush_moves()
  flush_records()
  apply_counts(K_DEPTH, DEPTH)
  apply_counts(K_FLOW_RUNNING, running_changes())
  if VCLOCK ~= nil then redis.call('SET', K_VCLOCK, string.format('%.0f', VCLOCK)) end
  for i = 1, #CHANGES, EVENT_CHANGES do
    local part = {unpack(CHANGES, i, math.min(i + EVENT_CHANGES - 1, #CHANGES))}
    publish_event(cjson.encode({kind = 'task', ts = NOW_MS / 1000, changes = part}))
  end
  local bucket = math.floor(NOW_MS / 10000)
  for state, n in pairs(DONE) do redis.call('HINCRBY', K_STATS_DONE, bucket .. ':' .. state, n) end
  for q, _ in pairs(WOKEN) do publish(C_WAKE(q), '1') end
  return FAN_LEFT
end

-- ------------------------------------------------------------------ begin
-- The start of every call (after bind): the time, and nothing changed yet.
local function begin()
  local t = redis.call('TIME')
  NOW_MS = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  VCLOCK = nil
  REC, DIRTY, IS_DIRTY, SIDE = {}, {}, {}, {}
  CHANGES, WOKEN, DONE, FIRST, MOVED, READY, DEPTH = {}, {}, {}, {}, {}, {}, {}
  RUNNING, RUN_Q, RUN_N, RUN_K, FLOW_READY, FLOW_GROUPS, FLOW_WAKE = {}, {}, {}, {}, {}, {}, nil
  SCHEDULE = {}
  FAN, FAN_NEXT, BUDGET, FAN_LEFT = {}, 1, FANOUT_CHUNK, 0
end

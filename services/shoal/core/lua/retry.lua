-- retry: run a failed or cancelled task again, with a fresh budget of retries; with
-- dependents, the upstream_failed tasks below it go back to pending in the same call and run
-- when what they wait on succeeds (a DAG recovered in place, under the same ids).
-- The attempt number keeps growing: it is the fencing token, so a late answer from an
-- old attempt can never be mistaken for the new one.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] task id, ARGV[2] '1': with dependents, ARGV[3] at most this many dependents (the
-- walk also stops at 4x as many edges); a bigger DAG is refused with nothing written
-- Returns {'ok', dependents back to pending} | {'notfound'} | {'conflict', state} |
-- {'blocked', dependency id, its state or ''} (the task waits on a dependency that will never
-- succeed) | {'toobig', bound}
local id, with_dependents, bound = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3] or '0')
local root = get_task(id)
if not root then return {'notfound'} end
if root[R_STATE] ~= 'failed' and root[R_STATE] ~= 'cancelled' then return {'conflict', root[R_STATE]} end

local function parents_of(t)
  local out = {}
  for dep in string.gmatch(t[R_DEPENDS_ON], '[^,]+') do out[#out + 1] = dep end
  return out
end

-- 1. The upstream_failed tasks below the root, through the edges cascades went (K_PAST_EDGES).
local found = {[id] = true}
local order = {id}
local below = {}  -- id -> its upstream_failed children
if with_dependents then
  local edge_budget = 4 * bound
  local i = 1
  while i <= #order do
    local parent = order[i]
    local edges = redis.call('ZRANGEBYLEX', K_PAST_EDGES, '[' .. parent .. M_SEP, '(' .. parent .. '\1',
      'LIMIT', 0, edge_budget + 1)
    edge_budget = edge_budget - #edges
    if edge_budget < 0 then return {'toobig', bound} end
    local skip = #parent + 2
    local children = {}
    for j, e in ipairs(edges) do children[j] = string.sub(e, skip) end
    load_tasks(children)
    local mine = {}
    for _, child in ipairs(children) do
      local t = REC[child]
      if t and t[R_STATE] == 'upstream_failed' then
        mine[#mine + 1] = child
        if not found[child] then
          found[child] = true
          order[#order + 1] = child
          if #order - 1 > bound then return {'toobig', bound} end
        end
      end
    end
    below[parent] = mine
    i = i + 1
  end
end

-- 2. Which of them can run again: not one that also waits on a dependency that stays dead
-- (outside this DAG, or gone), nor anything below such a one.
local wanted = {}
for _, tid in ipairs(order) do
  for _, dep in ipairs(parents_of(REC[tid])) do wanted[#wanted + 1] = dep end
end
load_tasks(wanted)
local function stays_dead(dep)
  if found[dep] then return false end
  local t = REC[dep]
  return not t or DEAD[t[R_STATE]]
end
-- A task that failed ran, so what it waited on succeeded (and may be gone by retention); a
-- cancelled one may have been waiting still.
local root_waits = root[R_STATE] == 'cancelled'
if root_waits then
  for _, dep in ipairs(parents_of(root)) do
    if stays_dead(dep) then return {'blocked', dep, REC[dep] and REC[dep][R_STATE] or ''} end
  end
end
local blocked, stack = {}, {}
for k = 2, #order do
  for _, dep in ipairs(parents_of(REC[order[k]])) do
    if stays_dead(dep) then
      blocked[order[k]] = true
      stack[#stack + 1] = order[k]
      break
    end
  end
end
while #stack > 0 do
  local b = table.remove(stack)
  for _, child in ipairs(below[b] or {}) do
    if not blocked[child] then
      blocked[child] = true
      stack[#stack + 1] = child
    end
  end
end

-- 3. Back they go: each waits again on its dependencies that have not succeeded (the edges
-- are restored), the root queues when it waits on nothing.
local restored_edges, unpast = {}, {}
local back = 0
for _, tid in ipairs(order) do
  if not blocked[tid] then
    local t = REC[tid]
    local left = 0
    for _, dep in ipairs((tid ~= id or root_waits) and parents_of(t) or {}) do
      local d = REC[dep]
      if found[dep] or (d and not TERMINAL[d[R_STATE]]) then
        left = left + 1
        restored_edges[#restored_edges + 1] = 0
        restored_edges[#restored_edges + 1] = dep .. M_SEP .. tid
        unpast[#unpast + 1] = dep .. M_SEP .. tid
        if d[R_DEPENDENTS] == '' then
          d[R_DEPENDENTS] = '1'
          touch(dep)
        end
      end
    end
    -- The failed attempts stay in the history; the task itself starts clean.
    t[R_ATTEMPT_LIMIT] = tonumber(t[R_ATTEMPTS]) + tonumber(t[R_MAX_RETRIES]) + 1
    t[R_FINISHED_AT] = ''
    t[R_DEPS_LEFT] = left
    put_side(K_RESULTS, tid, false)
    put_side(K_ERRORS, tid, false)
    put_side(K_TRACEBACKS, tid, false)
    if left > 0 then set_state(tid, t, 'pending') else enqueue(tid, t, false) end
    if tid ~= id then back = back + 1 end
  end
end
if #restored_edges > 0 then call_chunked('ZADD', K_EDGES, restored_edges) end
if #unpast > 0 then call_chunked('ZREM', K_PAST_EDGES, unpast) end
finish()
return {'ok', back}

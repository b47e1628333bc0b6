-- trim: drop finished tasks past their retention, by age and by count, oldest first, at most
-- `limit` per call (the leader calls it in rounds with a time budget).
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] cutoff_ms (tasks finished at or before it go), ARGV[2] max finished tasks kept
-- (0: no cap), ARGV[3] limit, ARGV[4] oldest stats bucket to keep (0: leave the stats alone)
-- Returns {tasks dropped, 1 when more are due (call again), 0 otherwise}.
local cutoff, cap, limit, keep_bucket = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local due = redis.call('ZCOUNT', K_DONE, '-inf', cutoff)
if cap > 0 then due = math.max(due, redis.call('ZCARD', K_DONE) - cap) end
local n = math.min(due, limit)
if keep_bucket > 0 then
  local old = {}
  for _, field in ipairs(redis.call('HKEYS', K_STATS_DONE)) do
    local bucket = tonumber(string.match(field, '^(%d+):'))
    if bucket and bucket < keep_bucket then old[#old + 1] = field end
  end
  if #old > 0 then call_chunked('HDEL', K_STATS_DONE, old) end
end
if n <= 0 then return {0, 0} end
local ids = redis.call('ZRANGE', K_DONE, 0, n - 1)
load_tasks(ids)
local by_state, idem, logs = {}, {}, {}
local left = {}  -- state -> (queue NUL name) -> true: index ranges that lost members
for _, id in ipairs(ids) do
  local t = REC[id]
  -- The retention index holds finished tasks only; anything else found here just leaves it.
  if t and TERMINAL[t[R_STATE]] then
    local members = by_state[t[R_STATE]]
    if not members then members = {}; by_state[t[R_STATE]] = members end
    members[#members + 1] = index_member(id, t)
    local ranges = left[t[R_STATE]]
    if not ranges then ranges = {}; left[t[R_STATE]] = ranges end
    ranges[t[R_QUEUE] .. M_SEP .. t[R_NAME]] = true
    -- The captured output of its last attempts (shoal.core.record.KEPT_ATTEMPT_LOGS).
    local last = tonumber(t[R_ATTEMPTS])
    for n = math.max(1, last - KEPT_ATTEMPT_LOGS + 1), last do logs[#logs + 1] = id .. M_SEP .. n end
    if t[R_DEPENDENTS] ~= '' then  -- its past edges go with it
      redis.call('ZREMRANGEBYLEX', K_PAST_EDGES, '[' .. id .. M_SEP, '(' .. id .. '\1')
    end
    local key = t[R_IDEMPOTENCY_KEY]
    if key ~= '' and redis.call('HGET', K_IDEMPOTENCY, key) == id then idem[#idem + 1] = key end
  end
end
for _, key in ipairs({K_TASKS, K_RESULTS, K_ERRORS, K_TRACEBACKS, K_HISTORY, K_PROGRESS, K_AUDIT}) do call_chunked('HDEL', key, ids) end
if #logs > 0 then call_chunked('HDEL', K_TASK_LOGS, logs) end
for state, members in pairs(by_state) do call_chunked('ZREM', K_STATE[state], members) end
-- A range emptied by the trim leaves the directory (else every (queue, name) pair ever used
-- would stay there and each listing would read it).
flush_ranges(left, {}, {})
if #idem > 0 then call_chunked('HDEL', K_IDEMPOTENCY, idem) end
call_chunked('ZREM', K_DONE, ids)
return {#ids, due > n and 1 or 0}

-- claim: give a worker up to n queued tasks, highest priority first, each with a lease.
-- KEYS: the namespace's fixed keys (generated prelude), then the worker's hash
-- ARGV[1] worker_id, ARGV[2] n, ARGV[3] lease_ms, ARGV[4..] queues in the worker's order
-- Returns {now_ms, then 8 fields per task: id, name, queue, attempt, args, kwargs, timeout_s, enqueued_at}
local worker, n, lease = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- A worker declared lost or stopped must register again before it gets work.
local wstate = redis.call('HGET', K_WORKER, 'state')
if wstate == 'lost' or wstate == 'stopped' then return {NOW_MS} end

-- Promote a few due delayed tasks so delays do not depend on the leader's loop.
promote_due(50)
flush_ready()

local out = {NOW_MS}
local leases, mine = {}, {}
local deadline = NOW_MS + lease
for qi = 4, #ARGV do
  if n <= 0 then break end
  local queue = ARGV[qi]
  -- A paused queue keeps its tasks; nothing is claimed from it until it is resumed.
  local popped = {}
  if redis.call('HEXISTS', K_PAUSED_QUEUES, queue) == 0 then
    popped = redis.call('ZRANGEBYLEX', K_READY, '[' .. queue .. M_SEP, '(' .. queue .. '\1', 'LIMIT', 0, n)
  end
  if #popped > 0 then
    redis.call('ZREMRANGEBYLEX', K_READY, '[' .. popped[1], '[' .. popped[#popped])
    local skip = #queue + 2 + READY_HEX_DIGITS
    local ids = {}
    for j, m in ipairs(popped) do ids[j] = string.sub(m, skip) end
    load_tasks(ids)
    for _, id in ipairs(ids) do
      local t = REC[id]
      if t and t[R_STATE] == 'queued' then
        depth_add(queue, t[R_PRIORITY], -1)
        local attempt = tonumber(t[R_ATTEMPTS]) + 1
        t[R_ATTEMPTS], t[R_WORKER_ID], t[R_STARTED_AT] = attempt, worker, NOW_MS
        set_state(id, t, 'running')
        leases[#leases + 1] = deadline
        leases[#leases + 1] = id
        mine[#mine + 1] = 0
        mine[#mine + 1] = worker .. M_SEP .. id
        out[#out + 1] = id
        out[#out + 1] = t[R_NAME]
        out[#out + 1] = queue
        out[#out + 1] = attempt
        out[#out + 1] = t[R_ARGS]
        out[#out + 1] = t[R_KWARGS]
        out[#out + 1] = t[R_TIMEOUT_S]
        out[#out + 1] = t[R_ENQUEUED_AT]
        n = n - 1
      end
    end
  end
end
if #leases > 0 then
  call_chunked('ZADD', K_LEASES, leases)
  call_chunked('ZADD', K_WORKER_TASKS, mine)
end
finish()
return out

-- progress: a running attempt reports how far it is; stored with the task and published.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] task id, ARGV[2] attempt (the fencing token), ARGV[3] worker id,
-- ARGV[4] fraction (0..1, checked by the caller), ARGV[5] message ('' for none),
-- ARGV[6] the event stream's approximate cap in entries
-- Returns 1 when stored; 0 when that attempt is not the task's running one on that worker
-- any more (it finished, was cancelled, reaped or handed to another worker): a late report
-- never overwrites a newer attempt's progress.
local id, attempt, worker = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', K_TASKS, id)
if not raw then return 0 end
local r = {string.match(raw, R_PATTERN)}
if r[R_STATE] ~= 'running' or r[R_ATTEMPTS] ~= attempt or r[R_WORKER_ID] ~= worker then return 0 end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local message = ARGV[5] ~= '' and ARGV[5] or nil
local fraction = tonumber(ARGV[4])
redis.call('HSET', K_PROGRESS, id, cjson.encode({
  attempt = tonumber(attempt), fraction = fraction, message = message, at = now_ms,
}))
local ev = cjson.encode({
  kind = 'progress', ts = now_ms / 1000, id = id, attempt = tonumber(attempt),
  fraction = fraction, message = message,
})
publish(C_EVENTS, ev)
redis.call('XADD', K_EVENTS, 'MAXLEN', '~', tonumber(ARGV[6]), '*', 'e', ev)
return 1

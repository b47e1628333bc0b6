-- retry: queue a failed task again, with a fresh budget of retries.
-- The attempt number keeps growing: it is the fencing token, so a late answer from an
-- old attempt can never be mistaken for the new one.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] task id
-- Returns {'ok'} | {'notfound'} | {'conflict', state}
local id = ARGV[1]
local key = K_TASK(id)
local h = redis.call('HMGET', key, 'state', 'attempts', 'max_retries', 'idempotency_key')
if not h[1] then return {'notfound'} end
if h[1] ~= 'failed' then return {'conflict', h[1]} end
redis.call('PERSIST', key)
redis.call('PERSIST', K_HISTORY(id))
if h[4] and h[4] ~= '' then redis.call('PERSIST', K_IDEMPOTENCY(h[4])) end
-- The failed attempts stay in the history; the task itself starts clean.
redis.call('HSET', key, 'attempt_limit', tonumber(h[2]) + tonumber(h[3]) + 1, 'finished_at', '', 'result', '',
  'error', '', 'traceback', '')
enqueue(id, 'failed', false)
finish()
return {'ok'}

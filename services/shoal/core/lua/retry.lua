-- retry: queue a failed task again, with a fresh budget of retries.
-- The attempt number keeps growing: it is the fencing token, so a late answer from an
-- old attempt can never be mistaken for the new one.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] task id
-- Returns {'ok'} | {'notfound'} | {'conflict', state}
local id = ARGV[1]
local t = get_task(id)
if not t then return {'notfound'} end
if t[R_STATE] ~= 'failed' then return {'conflict', t[R_STATE]} end
-- The failed attempts stay in the history; the task itself starts clean.
t[R_ATTEMPT_LIMIT] = tonumber(t[R_ATTEMPTS]) + tonumber(t[R_MAX_RETRIES]) + 1
t[R_FINISHED_AT] = ''
put_side(K_RESULTS, id, false)
put_side(K_ERRORS, id, false)
put_side(K_TRACEBACKS, id, false)
enqueue(id, t, false)
finish()
return {'ok'}

-- schedule_pause: pause a schedule (it enqueues nothing) or resume it from its next tick.
-- KEYS[1] the schedule's hash, KEYS[2] due index (zset)
-- ARGV[1] '1' pause | '0' resume, ARGV[2] now_ms, ARGV[3] next_run_ms after resuming,
-- ARGV[4] the digest next_run_ms was computed from (a definition replaced meanwhile: 'changed')
-- Returns 'ok' | 'notfound' | 'changed'.
local id = redis.call('HGET', KEYS[1], 'id')
if not id then return 'notfound' end
if ARGV[1] == '1' then
  if redis.call('HGET', KEYS[1], 'paused') ~= '1' then
    redis.call('HSET', KEYS[1], 'paused', 1, 'paused_at', ARGV[2], 'updated_at', ARGV[2])
  end
  redis.call('ZREM', KEYS[2], id)
else
  if redis.call('HGET', KEYS[1], 'paused') == '1' then
    if redis.call('HGET', KEYS[1], 'digest') ~= ARGV[4] then return 'changed' end
    redis.call('HSET', KEYS[1], 'paused', 0, 'paused_at', '', 'next_run', ARGV[3], 'updated_at', ARGV[2])
    redis.call('ZADD', KEYS[2], ARGV[3], id)
  end
end
return 'ok'

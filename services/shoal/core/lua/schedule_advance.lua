-- schedule_advance: after the ticker handled a due tick, move the schedule to its next run.
-- Compare-and-set on next_run: a ticker that lost the leadership (or raced an update of the
-- schedule) changes nothing. The task of the tick was submitted before this call with the
-- idempotency key (schedule, tick), so a leader that dies in between and its successor
-- enqueue the tick once between them.
-- KEYS[1] the schedule's hash, KEYS[2] due index (zset)
-- ARGV[1] expected next_run_ms, ARGV[2] new next_run_ms, ARGV[3] fired tick ms ('' = none),
-- ARGV[4] task id ('' = none), ARGV[5] now_ms, ARGV[6] ticks missed, ARGV[7] misfire note ('' = none)
-- Returns 1 when moved, 0 when the schedule changed meanwhile (or is gone).
local h = redis.call('HMGET', KEYS[1], 'next_run', 'paused', 'id')
if not h[3] or h[1] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next_run', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'last_tick', ARGV[3], 'last_task_id', ARGV[4], 'last_fired_at', ARGV[5])
end
local missed = tonumber(ARGV[6])
if missed > 0 then redis.call('HINCRBY', KEYS[1], 'missed', missed) end
if ARGV[7] ~= '' then redis.call('HSET', KEYS[1], 'last_misfire', ARGV[7], 'last_misfire_at', ARGV[5]) end
if h[2] ~= '1' then redis.call('ZADD', KEYS[2], ARGV[2], h[3]) end
return 1

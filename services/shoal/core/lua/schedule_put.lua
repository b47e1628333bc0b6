-- schedule_put: create, replace or declare (from code) one schedule.
-- KEYS[1] the schedule's hash, KEYS[2] due index (zset, next run ms), KEYS[3] every schedule (zset)
-- ARGV[1] mode: 'create' (refused if it exists), 'replace', or 'declare' (nothing changes when
--   the stored definition has the same digest: workers re-declare their schedules at every start)
-- ARGV[2] digest, ARGV[3] next_run_ms, ARGV[4] anchor_ms, ARGV[5] now_ms,
-- ARGV[6] '1' to create it paused (an existing schedule keeps its paused state),
-- ARGV[7..] field, value pairs of the definition
-- Returns 'created' | 'updated' | 'same' | 'exists'.
local mode, digest = ARGV[1], ARGV[2]
local next_run, anchor, now = ARGV[3], ARGV[4], ARGV[5]
local h = redis.call('HMGET', KEYS[1], 'digest', 'paused', 'id')
local exists = h[3] ~= false
local paused = h[2]
if not exists then paused = ARGV[6] end
if exists and mode == 'create' then return 'exists' end
if exists and mode == 'declare' and h[1] == digest then return 'same' end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], 'digest', digest, 'next_run', next_run, 'anchor', anchor, 'updated_at', now,
  unpack(fields))
if not exists then
  redis.call('HSET', KEYS[1], 'created_at', now, 'paused', paused, 'missed', 0)
  if paused == '1' then redis.call('HSET', KEYS[1], 'paused_at', now) end
  redis.call('ZADD', KEYS[3], now, redis.call('HGET', KEYS[1], 'id'))
end
if paused == '1' then
  redis.call('ZREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
else
  redis.call('ZADD', KEYS[2], next_run, redis.call('HGET', KEYS[1], 'id'))
end
if exists then return 'updated' end
return 'created'

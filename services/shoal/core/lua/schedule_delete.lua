-- schedule_delete: forget a schedule; tasks it already enqueued are left alone.
-- KEYS[1] the schedule's hash, KEYS[2] due index (zset), KEYS[3] every schedule (zset)
-- ARGV[1] schedule id
-- Returns 1 if it existed, else 0.
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return redis.call('DEL', KEYS[1])

-- promote: delayed and backed-off tasks whose time has come are queued.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] limit
-- Returns the number promoted.
local due = redis.call('ZRANGEBYSCORE', K_SCHEDULED, '-inf', NOW_MS, 'LIMIT', 0, tonumber(ARGV[1]))
local n = 0
for _, id in ipairs(due) do
  redis.call('ZREM', K_SCHEDULED, id)
  if redis.call('HGET', K_TASK(id), 'state') == 'scheduled' then
    enqueue(id, 'scheduled', false)
    n = n + 1
  end
end
finish()
return n

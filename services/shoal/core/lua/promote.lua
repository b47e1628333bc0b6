-- promote: delayed and backed-off tasks whose time has come are queued.
-- KEYS[1] prefix
-- ARGV[1] limit
-- Returns the number promoted.
local due = redis.call('ZRANGEBYSCORE', P .. ':scheduled', '-inf', NOW_MS, 'LIMIT', 0, tonumber(ARGV[1]))
local n = 0
for _, id in ipairs(due) do
  redis.call('ZREM', P .. ':scheduled', id)
  if redis.call('HGET', tkey(id), 'state') == 'scheduled' then
    enqueue(id, 'scheduled', false)
    n = n + 1
  end
end
finish()
return n

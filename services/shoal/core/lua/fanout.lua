-- fanout: continue releases and cascades that an earlier call left in K_FANOUT (each call
-- does at most FANOUT_CHUNK edges, so a 100,000-dependent fan-out never blocks Redis long).
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV: none
-- Returns the number of work items still waiting.
local items = redis.call('LPOP', K_FANOUT, FANOUT_CHUNK)
if items then
  for _, item in ipairs(items) do fan_out(string.sub(item, 1, 1), string.sub(item, 3)) end
end
finish()
return redis.call('LLEN', K_FANOUT)

-- promote: delayed and backed-off tasks whose time has come are queued.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] limit
-- Returns the number promoted.
local n = promote_due(tonumber(ARGV[1]))
finish()
return n

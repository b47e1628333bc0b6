-- Publish one event from Python (a worker registered or drains, a scaling decision): on the
-- live channel and into the capped stream, in one atomic call (PUBLISH cannot go into a
-- cluster pipeline; a script can, with `publish` from the prelude choosing SPUBLISH there).
-- KEYS: the namespace's fixed keys (generated prelude); ARGV[1] the event (JSON),
-- ARGV[2] the stream's approximate cap in entries.
publish(C_EVENTS, ARGV[1])
return redis.call('XADD', K_EVENTS, 'MAXLEN', '~', tonumber(ARGV[2]), '*', 'e', ARGV[1])

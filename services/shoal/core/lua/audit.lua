-- audit: record who did what to which tasks: an entry on each task (its last AUDIT_KEPT kept)
-- and one in the namespace's capped audit stream. Runs after the action it records.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] actor, ARGV[2] action, ARGV[3] detail ('' for none), ARGV[4] 1 when the tasks are
-- new (nothing to append to), ARGV[5] entries kept in the stream (approximately), then task ids
-- Returns the number of tasks the entry was recorded on (ids of tasks that are gone are skipped).
local actor, action, detail, fresh, log_cap = ARGV[1], ARGV[2], ARGV[3], ARGV[4] == '1', tonumber(ARGV[5])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entry = {ts = now_ms / 1000, actor = actor, action = action}
if detail ~= '' then entry.detail = detail end
local one = cjson.encode(entry)
local ids, flat = {}, {}
for i = 6, #ARGV do ids[#ids + 1] = ARGV[i] end
if fresh then
  for _, id in ipairs(ids) do
    flat[#flat + 1] = id
    flat[#flat + 1] = '[' .. one .. ']'
  end
else
  for i = 1, #ids, 500 do
    local part = {unpack(ids, i, math.min(i + 499, #ids))}
    local records = redis.call('HMGET', K_TASKS, unpack(part))
    local old = redis.call('HMGET', K_AUDIT, unpack(part))
    for j, id in ipairs(part) do
      if records[j] then
        local list = old[j] and cjson.decode(old[j]) or {}
        list[#list + 1] = entry
        while #list > AUDIT_KEPT do table.remove(list, 1) end
        flat[#flat + 1] = id
        flat[#flat + 1] = cjson.encode(list)
      end
    end
  end
end
for i = 1, #flat, 1000 do redis.call('HSET', K_AUDIT, unpack(flat, i, math.min(i + 999, #flat))) end
local shown = {unpack(ids, 1, math.min(#ids, AUDIT_LOGGED_IDS))}
entry.tasks = #ids
if #shown > 0 then entry.task_ids = shown end
redis.call('XADD', K_AUDIT_LOG, 'MAXLEN', '~', log_cap, '*', 'e', cjson.encode(entry))
return #flat / 2

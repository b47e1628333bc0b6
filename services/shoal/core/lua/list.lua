-- list: one page of tasks, newest first, for any combination of state, queue and name.
-- Reads only. Each state's index is a set of (queue, name) ranges, each ordered by creation;
-- K_RANGES lists the non-empty ranges (state NUL queue NUL name) with an upper bound of
-- their newest creation stamp. A page merges the ranges its filters select, opening them newest bound first and
-- only while a range could still hold one of the page's tasks: the cost follows the page
-- and the ranges that matter, not the backlog, and a page is empty only when nothing matches.
-- KEYS: the namespace's fixed keys (generated prelude)
-- ARGV[1] states (comma-separated), ARGV[2] queue ('' = any), ARGV[3] name ('' = any),
-- ARGV[4] limit, ARGV[5] cursor: the creation stamp of the previous page's last task ('' = newest),
-- ARGV[6] '1' for ids only
-- Returns {next cursor ('' on the last page), then id, record, result, error, traceback, progress
-- per task}
-- (or only the ids)
local queue, name, limit, cursor = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local want = limit + 1  -- one more than the page: is there a next page?

-- The ranges to merge: {key, prefix, bound}, bound capped by the cursor.
local ranges = {}
local wanted = {}
for state in string.gmatch(ARGV[1], '[^,]+') do wanted[state] = true end
local listing = redis.call('HGETALL', K_RANGES)
for i = 1, #listing, 2 do
  local field, bound = listing[i], listing[i + 1]
  local s1 = string.find(field, M_SEP, 1, true)
  local s2 = string.find(field, M_SEP, s1 + 1, true)
  local state = string.sub(field, 1, s1 - 1)
  if wanted[state] and (queue == '' or string.sub(field, s1 + 1, s2 - 1) == queue)
      and (name == '' or string.sub(field, s2 + 1) == name) then
    if cursor ~= '' and bound >= cursor then bound = cursor end
    ranges[#ranges + 1] = {key = K_STATE[state], prefix = string.sub(field, s1 + 1) .. M_SEP, bound = bound}
  end
end
table.sort(ranges, function(a, b) return a.bound > b.bound end)

-- Threshold rounds: each round reads, from every range that could still hold one of the
-- page's tasks, its next `chunk` members (newest first, as "created id" tails), then keeps the
-- `want` newest tails seen. `cut`, the want-th newest so far, bounds what a range must still
-- give: a range is read again only while its last tail is newer than the cut, and opened only
-- if its bound is not older. A first chunk of want / #ranges (plus one) makes the common case
-- one read per range, however many ranges a filter selects; a range read again doubles its chunk.
local tails, cut = {}, nil
local opened, nxt = {}, 1
local first_chunk = math.max(2, math.ceil(want * 1.25 / math.max(1, #ranges)) + 1)
local function fetch(r)
  local hi
  if r.last then
    hi = '(' .. r.prefix .. r.last
  elseif cursor ~= '' then
    hi = '(' .. r.prefix .. cursor
  else
    hi = '(' .. string.sub(r.prefix, 1, -2) .. '\1'
  end
  local got = redis.call('ZREVRANGEBYLEX', r.key, hi, '[' .. r.prefix, 'LIMIT', 0, r.chunk)
  local skip = #r.prefix + 1
  for i = 1, #got do tails[#tails + 1] = string.sub(got[i], skip) end
  r.done = #got < r.chunk
  if #got > 0 then r.last = string.sub(got[#got], skip) end
  r.chunk = math.min(want, r.chunk * 2)
end
while true do
  -- Ranges not yet open that may beat the cut go first: opening them tightens the cut, which
  -- spares re-reads of the ranges already open. Re-reads only when none is left to open.
  local batch = {}
  local expected = #tails
  local cut_stamp = cut and string.sub(cut, 1, CREATED_HEX_DIGITS)
  while nxt <= #ranges do
    local r = ranges[nxt]
    -- Ranges come newest bound first: past the first that cannot beat the cut, none can.
    if cut_stamp then
      if r.bound < cut_stamp then break end
    elseif expected >= want then
      break
    end
    r.chunk = first_chunk
    batch[#batch + 1] = r
    opened[#opened + 1] = r
    nxt = nxt + 1
    expected = expected + first_chunk
  end
  if #batch == 0 then
    for _, r in ipairs(opened) do
      if not r.done and (cut == nil or r.last > cut) then batch[#batch + 1] = r end
    end
  end
  if #batch == 0 then break end
  for _, r in ipairs(batch) do fetch(r) end
  -- Ascending with the built-in comparison (a Lua comparator costs a call per comparison),
  -- then the want newest kept, newest first.
  table.sort(tails)
  local kept, n = {}, #tails
  for i = n, math.max(1, n - want + 1), -1 do kept[#kept + 1] = tails[i] end
  tails = kept
  if #tails >= want then cut = tails[want] end
end

local next_cursor = ''
if #tails > limit then
  tails[#tails] = nil
  next_cursor = string.sub(tails[#tails], 1, CREATED_HEX_DIGITS)
end
local out = {next_cursor}
if #tails == 0 then return out end
local ids = {}
for i, tail in ipairs(tails) do ids[i] = string.sub(tail, CREATED_HEX_DIGITS + 1) end
if ARGV[6] == '1' then
  for _, id in ipairs(ids) do out[#out + 1] = id end
  return out
end
-- A side hash that does not exist (no result, error... in the namespace yet) is not read.
local cols, none = {}, {}
for c, key in ipairs({K_TASKS, K_RESULTS, K_ERRORS, K_TRACEBACKS, K_PROGRESS}) do
  if c == 1 or redis.call('EXISTS', key) == 1 then
    cols[c] = redis.call('HMGET', key, unpack(ids))
  else
    cols[c] = none
  end
end
local n = 1
for i = 1, #ids do
  out[n + 1] = ids[i]
  for c = 1, 5 do out[n + 1 + c] = cols[c][i] or false end
  n = n + 6
end
return out

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
-- Returns {next cursor ('' on the last page), then id, record, result, error, traceback per task}
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

-- A range yields its members newest first (as "created id" tails), CHUNK at a time.
local CHUNK = math.min(want, 16)
local function fetch(r)
  local hi
  if r.last then
    hi = '(' .. r.prefix .. r.last
  elseif cursor ~= '' then
    hi = '(' .. r.prefix .. cursor
  else
    hi = '(' .. string.sub(r.prefix, 1, -2) .. '\1'
  end
  local got = redis.call('ZREVRANGEBYLEX', r.key, hi, '[' .. r.prefix, 'LIMIT', 0, CHUNK)
  local skip = #r.prefix + 1
  r.buf, r.pos, r.more = {}, 1, #got == CHUNK
  for i, m in ipairs(got) do r.buf[i] = string.sub(m, skip) end
  if #got > 0 then r.last = r.buf[#got] end
  return #got > 0
end

-- Max-heap of open ranges by their current head.
local heap = {}
local function head(i) local r = heap[i]; return r.buf[r.pos] end
local function swap(i, j) heap[i], heap[j] = heap[j], heap[i] end
local function sift_up(i)
  while i > 1 do
    local p = math.floor(i / 2)
    if head(i) <= head(p) then return end
    swap(i, p)
    i = p
  end
end
local function sift_down(i)
  while true do
    local l, r, top = 2 * i, 2 * i + 1, i
    if l <= #heap and head(l) > head(top) then top = l end
    if r <= #heap and head(r) > head(top) then top = r end
    if top == i then return end
    swap(i, top)
    i = top
  end
end

local tails = {}
local nxt = 1  -- the next unopened range (they are in descending bound order)
while #tails < want do
  -- Open every range whose bound could beat the best head so far.
  while nxt <= #ranges and (#heap == 0 or ranges[nxt].bound >= string.sub(head(1), 1, CREATED_HEX_DIGITS)) do
    local r = ranges[nxt]
    nxt = nxt + 1
    if fetch(r) then
      heap[#heap + 1] = r
      sift_up(#heap)
    end
  end
  if #heap == 0 then break end
  local r = heap[1]
  tails[#tails + 1] = r.buf[r.pos]
  r.pos = r.pos + 1
  if r.pos > #r.buf and not (r.more and fetch(r)) then
    heap[1] = heap[#heap]
    heap[#heap] = nil
  end
  if #heap > 0 then sift_down(1) end
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
local cols = {}
for c, key in ipairs({K_TASKS, K_RESULTS, K_ERRORS, K_TRACEBACKS}) do
  cols[c] = redis.call('HMGET', key, unpack(ids))
end
for i, id in ipairs(ids) do
  out[#out + 1] = id
  for c = 1, 4 do out[#out + 1] = cols[c][i] end
end
return out

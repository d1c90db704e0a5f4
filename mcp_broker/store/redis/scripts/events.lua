-- A page of the traffic log (see Store.events). ARGV: after (a seq, '' none), since ('' none),
-- limit, session ('' any), protocol ('' any), message ('' any), budget (entries scanned at most).
-- After a seq or from a time: ascending; else the latest ``limit``, returned oldest first.
-- Returns {events, head seq or false, last seq scanned or false, 1 if the budget ran out}.
local after, since, limit = opt(ARGV[1]), opt(ARGV[2]), tonumber(ARGV[3])
local session, protocol, message = opt(ARGV[4]), opt(ARGV[5]), opt(ARGV[6])
local budget = tonumber(ARGV[7])
local ev = P .. 'ev'
local PAGE = 200

local function seq_of(id)
  return string.match(id, '^(%d+)')
end

local function wanted(e)
  return (after or not since or tonumber(e.at) >= tonumber(since))
    and (not session or e.r == session or e.s == session)
    and (not protocol or e.p == protocol)
    and (not message or e.m == message)
end

local function row(id, e)
  local name = function(id) return redis.call('HGET', key('s', id), 'name') or id end
  local d = redis.call('HMGET', dkey(e.r, e.m), 'version', 'adapted_via')
  return {seq_of(id), e.at, e.k, e.m, e.s, name(e.s), e.r, name(e.r), e.p, e.v, d[1] or e.v,
    d[2] or false, e.a, e.why or false, e.c}
end

local head = redis.call('XREVRANGE', ev, '+', '-', 'COUNT', 1)
local head_seq = head[1] and seq_of(head[1][1]) or false
local found, last, scanned = {}, false, 0
local ascending = after or since
local start
if after then
  start = '(' .. after .. '-0'
elseif since then
  -- From the first event appended at or after ``since``: the log is in the order appended, and
  -- callers' clocks may disagree a little, so the earliest seq is looked for, not the earliest time.
  local first = false
  for _, n in ipairs(redis.call('ZRANGEBYSCORE', P .. 'evat', since, '+inf')) do
    local v = tonumber(n)
    if not first or v < first then first = v end
  end
  if not first then return {{}, head_seq, false, 0} end
  start = string.format('%d-0', first)
else
  start = '+'
end
while #found < limit and scanned < budget do
  local page
  if ascending then
    page = redis.call('XRANGE', ev, start, '+', 'COUNT', PAGE)
  else
    page = redis.call('XREVRANGE', ev, start, '-', 'COUNT', PAGE)
  end
  if #page == 0 then break end
  for _, entry in ipairs(page) do
    scanned = scanned + 1
    last = entry[1]
    local e = {}
    for i = 1, #entry[2], 2 do e[entry[2][i]] = entry[2][i + 1] end
    if wanted(e) then
      found[#found + 1] = row(entry[1], e)
      if #found == limit then break end
    end
    if scanned >= budget then break end
  end
  start = '(' .. last
end
if not ascending then
  local n = #found
  for i = 1, math.floor(n / 2) do found[i], found[n + 1 - i] = found[n + 1 - i], found[i] end
end
return {found, head_seq, last and seq_of(last), (#found < limit and scanned >= budget) and 1 or 0}

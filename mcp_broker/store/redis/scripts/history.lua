-- A page of what a session sent and received, newest stored first (see Store.history).
-- ARGV: session, before (exclusive pos, or '+inf'), limit + 1, direction ('', sent, received),
-- peer, protocol, since, until ('' for none), budget (entries scanned at most).
-- Returns {entries, last pos scanned or false, 1 if the budget ran out}; each entry:
-- {pos, 1 if sent, {message id, delivery fields, message fields, sender name}, status rows}.
local me, before, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local direction, peer, protocol = ARGV[4], opt(ARGV[5]), opt(ARGV[6])
local since, untl, budget = opt(ARGV[7]), opt(ARGV[8]), tonumber(ARGV[9])

local function has(r, mid) return redis.call('EXISTS', dkey(r, mid)) == 1 end

local function entry(mid, pos, sent)
  local m = key('m', mid)
  local d = redis.call('HGETALL', dkey(me, mid))
  if #d == 0 then -- what it sent has no delivery of its own: the message's fields stand in for one
    local at, priority = unpack(redis.call('HMGET', m, 'created_at', 'priority'))
    d = {'priority', priority, 'attempts', '0', 'visible_at', at, 'state', 'sent', 'updated_at', at}
  end
  local sender = redis.call('HGET', m, 'sender_id')
  local view = {mid, d, redis.call('HGETALL', m), redis.call('HGET', key('s', sender), 'name')}
  local rows = {}
  local recipients = sent and redis.call('LRANGE', key('to', mid), 0, -1) or {me}
  for _, r in ipairs(recipients) do
    local row = status_row(mid, r)
    if row then rows[#rows + 1] = row end
  end
  return {pos, sent and 1 or 0, view, rows}
end

local bound = before
if before ~= '+inf' then bound = '(' .. before end
local out, scanned, last = {}, 0, false
local hist = key('hist', me)
while #out < count and scanned < budget do
  local page = redis.call('ZREVRANGEBYSCORE', hist, bound, '-inf', 'WITHSCORES', 'LIMIT', 0, 100)
  if #page == 0 then break end
  for i = 1, #page, 2 do
    local mid, pos = page[i], page[i + 1]
    scanned = scanned + 1
    last = pos
    bound = '(' .. pos
    local m = redis.call('HMGET', key('m', mid), 'sender_id', 'protocol', 'created_at')
    if m[1] then
      local sent = m[1] == me
      local ok
      if direction == 'sent' then ok = sent
      elseif direction == 'received' then ok = has(me, mid)
      else ok = sent or has(me, mid) end
      if ok and peer then ok = (sent and has(peer, mid)) or m[1] == peer end
      if ok and protocol then ok = m[2] == protocol end
      if ok and since then ok = tonumber(m[3]) >= tonumber(since) end
      if ok and untl then ok = tonumber(m[3]) <= tonumber(untl) end
      if ok then
        out[#out + 1] = entry(mid, pos, sent)
        if #out == count then break end
      end
    end
    if scanned >= budget then break end
  end
end
return {out, last, (#out < count and scanned >= budget) and 1 or 0}

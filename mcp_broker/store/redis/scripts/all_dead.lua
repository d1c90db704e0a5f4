-- A page of every recipient's dead letters, newest stored first (see Store.all_dead_letters).
-- ARGV: before (exclusive seq, or '+inf'), limit + 1. Each row: {seq, recipient, its name, inbox row}.
local before, count = ARGV[1], tonumber(ARGV[2])
local bound = before
if before ~= '+inf' then bound = '(' .. before end
local all = {}
for _, r in ipairs(redis.call('SMEMBERS', P .. 'inboxes')) do
  local found = redis.call('ZREVRANGEBYSCORE', key('dead', r), bound, '-inf', 'WITHSCORES', 'LIMIT', 0, count)
  for i = 1, #found, 2 do
    all[#all + 1] = {tonumber(found[i + 1]), found[i + 1], r, found[i]}
  end
end
table.sort(all, function(a, b) return a[1] > b[1] end)
local out = {}
for i = 1, math.min(count, #all) do
  local _, seq, r, mid = unpack(all[i])
  out[#out + 1] = {seq, r, redis.call('HGET', key('s', r), 'name') or r, inbox_row(r, mid)}
end
return out

-- Queue every dead-lettered delivery of these messages again, fresh attempts and no expiry, in
-- the order stored; a recipient whose inbox is full keeps its dead letter (see Store.replay_dead).
-- ARGV: now, max_inbox, message ids (distinct). Returns how many moved, per id.
local now, max_inbox = ARGV[1], tonumber(ARGV[2])
local dead, moved = {}, {}
for i = 3, #ARGV do
  local mid = ARGV[i]
  moved[i - 2] = 0
  for _, r in ipairs(redis.call('LRANGE', key('to', mid), 0, -1)) do
    local d = redis.call('HMGET', dkey(r, mid), 'state', 'seq')
    if d[1] == 'dead_lettered' then dead[#dead + 1] = {tonumber(d[2]), r, mid, i - 2} end
  end
end
table.sort(dead, function(a, b) return a[1] < b[1] end)
for _, found in ipairs(dead) do
  local _, r, mid, at = unpack(found)
  if depth(r, now) < max_inbox then
    put_back(r, mid, now, false, true, now)
    event('replayed', r, mid, 0, false, now)
    moved[at] = moved[at] + 1
  end
end
return moved

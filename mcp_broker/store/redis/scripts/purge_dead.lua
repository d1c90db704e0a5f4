-- Delete every dead-lettered delivery of these messages (see Store.purge_dead).
-- ARGV: now, message ids (distinct). Returns how many went, per id.
local now = ARGV[1]
local out = {}
for i = 2, #ARGV do
  local mid = ARGV[i]
  local gone = 0
  for _, r in ipairs(redis.call('LRANGE', key('to', mid), 0, -1)) do
    local d = dkey(r, mid)
    local found = redis.call('HMGET', d, 'state', 'attempts')
    if found[1] == 'dead_lettered' then
      event('purged', r, mid, found[2], false, now)
      redis.call('DEL', d)
      redis.call('ZREM', key('dead', r), mid)
      redis.call('ZREM', key('done', r), mid)
      redis.call('HINCRBY', key('m', mid), 'live', -1)
      gone = gone + 1
    end
  end
  out[#out + 1] = gone
end
return out

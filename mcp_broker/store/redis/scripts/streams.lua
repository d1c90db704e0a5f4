-- Stream rows: one by id, or the open ones idle since before a time, oldest first.
-- ARGV: 'one', id | 'idle', before, limit. Each row: {stream fields, received, acked}.
local function row(id)
  local st = redis.call('HGETALL', key('st', id))
  if #st == 0 then return false end
  local r = redis.call('HGET', key('st', id), 'recipient_id')
  local chunks = redis.call('HVALS', key('sc', id))
  local received, acked = 0, 0
  for _, mid in ipairs(chunks) do
    local d = redis.call('HMGET', dkey(r, mid), 'attempts', 'state')
    if d[1] and tonumber(d[1]) > 0 then received = received + 1 end
    if d[2] == 'acked' then acked = acked + 1 end
  end
  return {st, received, acked}
end
if ARGV[1] == 'one' then
  return {row(ARGV[2])}
end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'stidle', '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])) do
  out[#out + 1] = row(id)
end
return out

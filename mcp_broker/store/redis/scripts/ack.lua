-- Ack this recipient's deliveries (see Store.ack). ARGV: recipient, now, message ids (distinct).
-- If any id is not the recipient's, only those come back, as unknown, and nothing changes.
local r, now = ARGV[1], ARGV[2]
local found, missing = {}, {}
for i = 3, #ARGV do
  local st = redis.call('HMGET', dkey(r, ARGV[i]), 'state', 'attempts')
  if not st[1] then missing[#missing + 1] = ARGV[i] end
  found[i] = st
end
if #missing > 0 then
  return {'unknown', missing}
end
local out = {}
for i = 3, #ARGV do
  local state, attempts = found[i][1], found[i][2]
  if state == 'acked' then
    out[#out + 1] = 'already_acked'
  elseif state == 'dead_lettered' then
    out[#out + 1] = 'dead_lettered'
  elseif attempts == '0' then
    out[#out + 1] = 'not_received'
  else
    ack_delivery(r, ARGV[i], now)
    out[#out + 1] = 'acked'
  end
end
return {'done', out}

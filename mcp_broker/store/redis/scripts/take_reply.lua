-- The reply to a request, if it has come: handed over and acked at once (see Store.take_reply).
-- ARGV: requester, request id, now. Returns {1 if this call acked it, row}, or false.
local r, request, now = ARGV[1], ARGV[2], ARGV[3]
for _, mid in ipairs(redis.call('LRANGE', key('rp', request), 0, -1)) do
  local d = dkey(r, mid)
  local state = redis.call('HGET', d, 'state')
  if state == 'queued' or state == 'leased' or state == 'acked' then
    local row = inbox_row(r, mid)
    if state == 'acked' then
      return {0, row}
    end
    redis.call('HINCRBY', d, 'attempts', 1)
    ack_delivery(r, mid, now)
    return {1, row}
  end
end
return false

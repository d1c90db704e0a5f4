-- Store the reply and ack the request together (see Store.reply).
-- ARGV: recipient, request id, reply id, now, priority, protocol, expires_at, nfields, the reply's fields,
-- then the one target's four values. 1 if stored, 0 if the request was acked already.
local r, request, mid, now = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local priority, protocol, expires, nfields = tonumber(ARGV[5]), ARGV[6], opt(ARGV[7]), tonumber(ARGV[8])
if redis.call('EXISTS', key('m', mid)) == 1 then
  return 1 -- a retry of a call whose answer was lost: stored already
end
local state = redis.call('HGET', dkey(r, request), 'state')
if state ~= 'queued' and state ~= 'leased' and state ~= 'dead_lettered' then
  return 0
end
ack_delivery(r, request, now)
store_message(mid, 9, nfields, 1, now)
add_delivery(mid, 9 + 2 * nfields, priority, protocol, expires, now)
return 1

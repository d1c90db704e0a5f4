-- Abort an open stream of this sender: dead-letter its chunks not yet leased and store the notice
-- for the recipient (see Store.end_stream). ARGV: stream id, sender, reason, now, notice id,
-- priority, protocol, expires_at, nfields, the notice's fields, then the target's four values
-- (the stream's recipient). 1 if aborted, 0 if it was not open (or not theirs).
local id, sender, reason, now, mid = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local priority, protocol, expires, nfields = tonumber(ARGV[6]), ARGV[7], opt(ARGV[8]), tonumber(ARGV[9])
local st = key('st', id)
local found = redis.call('HMGET', st, 'sender_id', 'state', 'recipient_id')
if found[1] ~= sender or found[2] ~= 'open' then return 0 end
local r = found[3]
redis.call('HSET', st, 'state', 'aborted', 'reason', reason, 'last_at', now)
redis.call('SREM', key('stopen', sender), id)
redis.call('ZREM', P .. 'stidle', id)
redis.call('ZADD', P .. 'stdone', now, id)
local chunks = redis.call('HGETALL', key('sc', id))
local waiting = {}
for i = 1, #chunks, 2 do waiting[#waiting + 1] = {tonumber(chunks[i]), chunks[i + 1]} end
table.sort(waiting, function(a, b) return a[1] < b[1] end)
for _, chunk in ipairs(waiting) do
  local d = redis.call('HMGET', dkey(r, chunk[2]), 'state', 'attempts')
  if d[1] == 'queued' and d[2] == '0' then kill(r, chunk[2], 'stream_aborted', now) end
end
local target = 10 + 2 * nfields
ARGV[target] = r -- the caller leaves the recipient to the stream
store_message(mid, 10, nfields, 1, now)
add_delivery(mid, target, priority, protocol, expires, now)
return 1

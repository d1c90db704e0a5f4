-- Number a chunk and store it for the stream's recipient; a last chunk closes the stream in the
-- same step (see Store.append_chunk). ARGV: stream id, sender, max_chunks, max_inbox, now, last (1/0),
-- message id, priority, protocol, expires_at, nfields, the message's fields, the target's four values.
-- Returns {'stored', seq} or {refusal, depth}.
local id, sender, max_chunks, max_inbox = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local now, last, mid = ARGV[5], ARGV[6] == '1', ARGV[7]
local priority, protocol, expires, nfields = tonumber(ARGV[8]), ARGV[9], opt(ARGV[10]), tonumber(ARGV[11])
local m = key('m', mid)
if redis.call('EXISTS', m) == 1 then
  return {'stored', redis.call('HGET', m, 'stream_seq')} -- a retried call: stored already
end
local st = key('st', id)
local found = redis.call('HMGET', st, 'sender_id', 'state', 'chunks', 'recipient_id')
if found[1] ~= sender or found[2] ~= 'open' then return {'not_open', 0} end
if tonumber(found[3]) >= max_chunks then return {'too_many_chunks', 0} end
local target = 12 + 2 * nfields
local n = depth(ARGV[target], now)
if n >= max_inbox then return {'inbox_full', n} end
local seq = tonumber(found[3]) + 1
store_message(mid, 12, nfields, 1, now)
redis.call('HSET', m, 'stream_seq', seq)
add_delivery(mid, target, priority, protocol, expires, now)
redis.call('HSET', key('sc', id), seq, mid)
redis.call('HSET', st, 'chunks', seq, 'last_at', now)
if last then
  redis.call('HSET', st, 'state', 'closed')
  redis.call('SREM', key('stopen', sender), id)
  redis.call('ZREM', P .. 'stidle', id)
  redis.call('ZADD', P .. 'stdone', now, id)
else
  redis.call('ZADD', P .. 'stidle', now, id)
end
return {'stored', seq}

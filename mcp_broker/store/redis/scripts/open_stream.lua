-- Store a new open stream, unless its sender holds ``max_open`` open ones (see Store.open_stream).
-- ARGV: id, sender, recipient, protocol, version, opened_at, last_at, max_open. 1 if stored, else 0.
local id, sender = ARGV[1], ARGV[2]
local open = key('stopen', sender)
if redis.call('SCARD', open) >= tonumber(ARGV[8]) then return 0 end
if redis.call('EXISTS', key('st', id)) == 1 then return 1 end -- a retried call: stored already
redis.call('HSET', key('st', id), 'id', id, 'sender_id', sender, 'recipient_id', ARGV[3],
  'protocol', ARGV[4], 'version', ARGV[5], 'state', 'open', 'opened_at', ARGV[6], 'last_at', ARGV[7],
  'chunks', 0)
redis.call('SADD', open, id)
redis.call('ZADD', P .. 'stidle', ARGV[7], id)
return 1

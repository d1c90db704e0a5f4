-- End a session held by ``owner``. ARGV: id, owner, now. The row (with its depth), or false.
local s = key('s', ARGV[1])
if redis.call('HGET', s, 'owner') ~= ARGV[2] then return false end
redis.call('HSET', s, 'disconnected_at', ARGV[3])
return session(ARGV[1], ARGV[3])

-- Refresh a session's last_seen while ``owner`` holds it live. ARGV: id, owner, now. 1 or 0.
local s = key('s', ARGV[1])
local held = redis.call('HMGET', s, 'owner', 'disconnected_at')
if held[1] ~= ARGV[2] or held[2] then return 0 end
redis.call('HSET', s, 'last_seen', ARGV[3])
return 1

-- Create the session ``name`` or take over its row, if its owner is still the expected one
-- (see Store.claim_session). ARGV: new id, name, owner, host, pid, proc_start, protocols,
-- features, metadata, now, expect_exists (1/0), expect_owner ('' none), max_sessions ('' none),
-- broker_version ('' none).
-- Returns the row (with its depth), 'conflict', or 'full' (a new session past max_sessions).
local new_id, name, owner = ARGV[1], ARGV[2], ARGV[3]
local now, expect_exists, expect_owner = ARGV[10], ARGV[11] == '1', opt(ARGV[12])
local names = P .. 'names'
local id = redis.call('HGET', names, name)
local current = id and redis.call('HGET', key('s', id), 'owner') or false
if (id and true or false) ~= expect_exists or (id and current ~= expect_owner) then
  return 'conflict'
end
local fields = {'protocols', ARGV[7], 'features', ARGV[8], 'metadata', ARGV[9], 'owner', owner,
  'last_seen', now}
local optional = {host = ARGV[4], pid = ARGV[5], proc_start = ARGV[6], broker_version = ARGV[14] or ''}
if id then
  local s = key('s', id)
  if current ~= owner then redis.call('HSET', s, 'connected_at', now) end
  redis.call('HSET', s, unpack(fields))
  redis.call('HDEL', s, 'disconnected_at')
  redis.call('HINCRBY', s, 'revision', 1)
else
  local cap = opt(ARGV[13])
  if cap and redis.call('HLEN', names) >= tonumber(cap) then return 'full' end
  id = new_id
  redis.call('HSET', key('s', id), 'id', id, 'name', name, 'connected_at', now, 'revision', 0, unpack(fields))
  redis.call('HSET', names, name, id)
end
local s = key('s', id)
for field, value in pairs(optional) do
  if value == '' then redis.call('HDEL', s, field) else redis.call('HSET', s, field, value) end
end
return session(id, now)

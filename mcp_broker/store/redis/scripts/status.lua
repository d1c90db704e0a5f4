-- Every delivery of these messages, when ``sender`` sent them. ARGV: sender, message ids.
-- Returns {known ids, rows}; each row: message id, broadcast, protocol, version, created_at,
-- recipient, recipient name, then the delivery fields below.
local sender = ARGV[1]
local FIELDS = {'seq', 'state', 'reason', 'attempts', 'visible_at', 'expires_at', 'updated_at',
  'acked_at', 'version'}
local known, rows = {}, {}
for i = 2, #ARGV do
  local mid = ARGV[i]
  local m = redis.call('HMGET', key('m', mid), 'sender_id', 'broadcast', 'protocol', 'version', 'created_at')
  if m[1] == sender then
    known[#known + 1] = mid
    for _, r in ipairs(redis.call('LRANGE', key('to', mid), 0, -1)) do
      local d = redis.call('HMGET', dkey(r, mid), unpack(FIELDS))
      if d[1] then
        local row = {mid, m[2], m[3], m[4], m[5], r, redis.call('HGET', key('s', r), 'name')}
        for f = 1, #FIELDS do row[#row + 1] = d[f] end
        rows[#rows + 1] = row
      end
    end
  end
end
return {known, rows}

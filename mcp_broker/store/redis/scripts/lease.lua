-- Lease up to ``limit`` ready deliveries while ``owner`` holds the live session (see Store.lease).
-- ARGV: recipient, owner, limit, now, lease until, max_attempts, protocol ('' for any), stream
-- ('' for any). The rows are read before the lease changes them; the caller shows the lease's changes.
local r, owner = ARGV[1], ARGV[2]
local limit, now, untl, max_attempts, protocol = tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local stream = ARGV[8]
local held = redis.call('HMGET', key('s', r), 'owner', 'disconnected_at')
if held[1] ~= owner or held[2] then
  return {}
end
for _, mid in ipairs(redis.call('ZRANGEBYSCORE', key('exp', r), '-inf', now)) do
  kill(r, mid, 'expired', now)
end
local ready, later, tries = key('ready', r), key('later', r), key('tries', r)
-- Lapsed leases and delayed releases are ready again, in their place by priority and order.
for _, mid in ipairs(redis.call('ZRANGEBYSCORE', later, '-inf', now)) do
  redis.call('ZREM', later, mid)
  redis.call('ZADD', ready, redis.call('HGET', dkey(r, mid), 'rank'), mid)
end
for _, mid in ipairs(redis.call('ZRANGEBYSCORE', tries, max_attempts, '+inf')) do
  if redis.call('ZSCORE', ready, mid)
      and tonumber(redis.call('HGET', dkey(r, mid), 'visible_at')) <= tonumber(now) then
    kill(r, mid, 'max_attempts', now)
  end
end
-- Ready ones in rank order; one stored "in the future" by a caller whose clock runs ahead of this
-- one's is not visible yet.
local picked = {}
local start = 0
while #picked < limit do
  local page = redis.call('ZRANGE', ready, start, start + 99)
  if #page == 0 then break end
  for _, mid in ipairs(page) do
    local d = redis.call('HMGET', dkey(r, mid), 'protocol', 'visible_at', 'stream_id', 'stream_seq')
    if #picked < limit and (protocol == '' or d[1] == protocol) and (stream == '' or d[3] == stream)
        and tonumber(d[2]) <= tonumber(now) and in_order(r, d[3], d[4]) then
      picked[#picked + 1] = mid
    end
  end
  start = start + 100
end
local rows = {}
for _, mid in ipairs(picked) do
  rows[#rows + 1] = inbox_row(r, mid)
  local d = dkey(r, mid)
  local attempts = redis.call('HINCRBY', d, 'attempts', 1)
  redis.call('HSET', d, 'state', 'leased', 'visible_at', untl, 'updated_at', now)
  redis.call('ZREM', ready, mid)
  redis.call('ZADD', later, untl, mid)
  redis.call('ZADD', tries, attempts, mid)
  event('leased', r, mid, attempts, false, now)
end
return rows

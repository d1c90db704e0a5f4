-- Delete what retention no longer keeps (see Store.prune). ARGV: before, now, sessions_before.
-- Returns the counts: deliveries, messages, sessions, events.
local before, now = ARGV[1], ARGV[2]
local sessions_before = ARGV[3]
local older = '(' .. before
local counts = {0, 0, 0, 0}
local function drop_delivery(r, mid)
  redis.call('DEL', dkey(r, mid))
  redis.call('HINCRBY', key('m', mid), 'live', -1)
  counts[1] = counts[1] + 1
end
for _, r in ipairs(redis.call('SMEMBERS', P .. 'inboxes')) do
  -- Finished long ago, or expired long ago while still waiting (no lease will dead-letter those
  -- once their session is gone).
  for _, mid in ipairs(redis.call('ZRANGEBYSCORE', key('done', r), '-inf', older)) do
    redis.call('ZREM', key('done', r), mid)
    redis.call('ZREM', key('dead', r), mid)
    drop_delivery(r, mid)
  end
  for _, mid in ipairs(redis.call('ZRANGEBYSCORE', key('exp', r), '-inf', older)) do
    unindex(r, mid)
    drop_delivery(r, mid)
  end
  if redis.call('ZCARD', key('ready', r)) + redis.call('ZCARD', key('later', r))
      + redis.call('ZCARD', key('done', r)) == 0 then
    redis.call('SREM', P .. 'inboxes', r)
  end
end
for _, mid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'msgs', '-inf', older)) do
  local m = key('m', mid)
  local live, kind, corr, sender = unpack(redis.call('HMGET', m, 'live', 'kind', 'correlation_id', 'sender_id'))
  if not live or tonumber(live) <= 0 then
    if kind == 'reply' and corr then
      redis.call('LREM', key('rp', corr), 0, mid)
    end
    if sender then redis.call('ZREM', key('hist', sender), mid) end
    for _, r in ipairs(redis.call('LRANGE', key('to', mid), 0, -1)) do
      redis.call('ZREM', key('hist', r), mid)
    end
    redis.call('DEL', m, key('to', mid))
    redis.call('ZREM', P .. 'msgs', mid)
    counts[2] = counts[2] + 1
  end
end
local names = redis.call('HGETALL', P .. 'names')
for i = 1, #names, 2 do
  local id = names[i + 1]
  local last_seen = redis.call('HGET', key('s', id), 'last_seen')
  if last_seen and tonumber(last_seen) < tonumber(sessions_before) and depth(id, now) == 0 then
    redis.call('DEL', key('s', id), key('hist', id), key('rb', id))
    redis.call('SREM', P .. 'buckets', id)
    redis.call('HDEL', P .. 'names', names[i])
    counts[3] = counts[3] + 1
  end
end
-- Agreements go with either of their sessions.
for _, id in ipairs(redis.call('SMEMBERS', P .. 'agreeing')) do
  local ag = key('ag', id)
  if redis.call('EXISTS', key('s', id)) == 0 then
    redis.call('DEL', ag)
    redis.call('SREM', P .. 'agreeing', id)
  else
    for _, field in ipairs(redis.call('HKEYS', ag)) do
      local peer = string.sub(field, 1, (string.find(field, '\0', 1, true) or 0) - 1)
      if redis.call('EXISTS', key('s', peer)) == 0 then redis.call('HDEL', ag, field) end
    end
  end
end
-- Streams closed or aborted before retention, with their chunks' numbering.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'stdone', '-inf', older)) do
  redis.call('DEL', key('st', id), key('sc', id))
end
redis.call('ZREMRANGEBYSCORE', P .. 'stdone', '-inf', older)
-- Events older than retention, from the log and its time index, in batches unpack can take.
local old = redis.call('ZRANGEBYSCORE', P .. 'evat', '-inf', older)
for i = 1, #old, 500 do
  local ids = {}
  for j = i, math.min(i + 499, #old) do ids[#ids + 1] = old[j] .. '-0' end
  redis.call('XDEL', P .. 'ev', unpack(ids))
end
redis.call('ZREMRANGEBYSCORE', P .. 'evat', '-inf', older)
counts[4] = #old
return counts

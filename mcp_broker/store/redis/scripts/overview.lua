-- The whole namespace at a glance (see Store.overview). ARGV: now.
-- Returns {waiting, dead letters, oldest waiting created_at or false, last event at or false}.
local now = ARGV[1]
local waiting, dead = 0, 0
local oldest, oldest_at = false, false
for _, r in ipairs(redis.call('SMEMBERS', P .. 'inboxes')) do
  waiting = waiting + depth(r, now)
  dead = dead + redis.call('ZCARD', key('dead', r))
  for _, index in ipairs({'ready', 'later'}) do
    for _, mid in ipairs(redis.call('ZRANGE', key(index, r), 0, -1)) do
      local expires = redis.call('HGET', dkey(r, mid), 'expires_at')
      if not expires or tonumber(expires) > tonumber(now) then
        local created = redis.call('HGET', key('m', mid), 'created_at')
        if created and (not oldest or tonumber(created) < oldest) then
          oldest, oldest_at = tonumber(created), created -- the text, as numbers leave Lua truncated
        end
      end
    end
  end
end
local last = redis.call('ZRANGE', P .. 'evat', -1, -1, 'WITHSCORES')
return {waiting, dead, oldest_at, last[2] or false}

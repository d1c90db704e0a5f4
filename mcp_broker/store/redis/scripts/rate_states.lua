-- Every session's bucket as last charged, and how many messages it stored since ``since``
-- (see Store.rate_states). ARGV: since. Returns {session, tokens, updated_at, sent} rows.
local sent = {}
for _, mid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'msgs', ARGV[1], '+inf')) do
  if redis.call('LLEN', key('to', mid)) > 0 then
    local sender = redis.call('HGET', key('m', mid), 'sender_id')
    if sender then sent[sender] = (sent[sender] or 0) + 1 end
  end
end
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. 'buckets')) do
  local b = redis.call('HMGET', key('rb', id), 'tokens', 'updated_at')
  if b[1] then out[#out + 1] = {id, b[1], b[2], sent[id] or 0} end
end
return out

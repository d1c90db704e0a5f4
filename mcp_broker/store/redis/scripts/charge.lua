-- Take ``cost`` tokens from a session's bucket (refilled at ``rate`` per second up to ``burst``,
-- starting full), or none (see Store.charge). ARGV: session, cost, rate, burst, now.
-- Returns {1 or 0, tokens left, seconds until enough} as text (numbers leave Lua truncated).
local b = key('rb', ARGV[1])
local cost, rate, burst, now = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local found = redis.call('HMGET', b, 'tokens', 'updated_at')
local tokens = burst
if found[1] then
  tokens = math.min(burst, tonumber(found[1]) + math.max(0, now - tonumber(found[2])) * rate)
end
local function text(x) return string.format('%.17g', x) end
if tokens < cost then
  return {0, text(tokens), text((cost - tokens) / rate)}
end
redis.call('HSET', b, 'tokens', text(tokens - cost), 'updated_at', ARGV[5])
redis.call('SADD', P .. 'buckets', ARGV[1])
return {1, text(tokens - cost), '0'}

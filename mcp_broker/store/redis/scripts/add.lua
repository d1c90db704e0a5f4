-- Add a protocol version or an adapter, immutable once stored (see Store.add_protocol).
-- ARGV: 'protocol' or 'adapter', protocol name, field (version, or "from>to"), fingerprint,
-- the row as JSON, the capabilities as JSON (protocols), the cap on how many the store holds ('' none).
local kind, name, field, fingerprint, row, caps = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local rows = key(kind == 'protocol' and 'pr' or 'ad', name)
local old = redis.call('HGET', rows, field)
if old then
  if cjson.decode(old).fingerprint == fingerprint then return 'unchanged' end
  return 'conflict'
end
local cap = opt(ARGV[7])
if cap then  -- registering is rare: counting every name's versions here costs nothing that matters
  local held = 0
  for _, other in ipairs(redis.call('SMEMBERS', P .. (kind == 'protocol' and 'protocols' or 'adapted'))) do
    held = held + redis.call('HLEN', key(kind == 'protocol' and 'pr' or 'ad', other))
  end
  if held >= tonumber(cap) then return 'full' end
end
redis.call('HSET', rows, field, row)
if kind == 'protocol' then
  redis.call('HSET', key('pc', name), field, caps)
  redis.call('SADD', P .. 'protocols', name)
else
  redis.call('SADD', P .. 'adapted', name)
end
return 'registered'

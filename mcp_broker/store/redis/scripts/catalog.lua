-- Protocol or adapter rows as JSON. ARGV: 'protocol' or 'adapter', a protocol name ('' for all).
local kind, name = ARGV[1], ARGV[2]
local names = {name}
if name == '' then
  names = redis.call('SMEMBERS', P .. (kind == 'protocol' and 'protocols' or 'adapted'))
end
local out = {}
for _, n in ipairs(names) do
  for _, row in ipairs(redis.call('HVALS', key(kind == 'protocol' and 'pr' or 'ad', n))) do
    out[#out + 1] = row
  end
end
return out

-- A page of this recipient's dead letters, newest first, each after its seq.
-- ARGV: recipient, before (exclusive seq, or '+inf'), limit + 1.
local r, before, count = ARGV[1], ARGV[2], ARGV[3]
local bound = before
if before ~= '+inf' then bound = '(' .. before end
local found = redis.call('ZREVRANGEBYSCORE', key('dead', r), bound, '-inf', 'WITHSCORES', 'LIMIT', 0, count)
local out = {}
for i = 1, #found, 2 do
  out[#out + 1] = {found[i + 1], inbox_row(r, found[i])}
end
return out

-- Remember agreed versions. ARGV: now, then (sender, recipient, protocol, version) groups.
for i = 2, #ARGV, 4 do
  redis.call('HSET', key('ag', ARGV[i]), ARGV[i + 1] .. '\0' .. ARGV[i + 2], ARGV[i + 3])
  redis.call('SADD', P .. 'agreeing', ARGV[i])
end
return 1

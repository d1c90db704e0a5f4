-- Store a message and one delivery per target, or nothing (see Store.enqueue).
-- ARGV: message id, sender, guard recipient, guard revision, idempotency key, idempotency cutoff,
-- answer, max_inbox, refuse_full, now, expires_at, priority, protocol, idempotency ttl, the rate
-- charge (session, cost, rate, burst; the session '' for none), nfields, then nfields (field, value)
-- pairs of the message, then four values per target.
local mid, sender = ARGV[1], ARGV[2]
local guard_r, guard_rev = ARGV[3], ARGV[4]
local idem, cutoff, answer = ARGV[5], ARGV[6], ARGV[7]
local max_inbox, refuse_full = tonumber(ARGV[8]), ARGV[9] == '1'
local now, expires = ARGV[10], opt(ARGV[11])
local priority, protocol, idem_ttl = tonumber(ARGV[12]), ARGV[13], ARGV[14]
local nfields = tonumber(ARGV[19])
local first_target = 20 + 2 * nfields

if redis.call('EXISTS', key('m', mid)) == 1 then
  -- A retry of a call whose answer was lost on the way: it is stored already.
  return {'stored', redis.call('LRANGE', key('to', mid), 0, -1), {}}
end
if guard_r ~= '' and redis.call('HGET', key('s', guard_r), 'revision') ~= guard_rev then
  return {'conflict'}
end
local ikey = false
if idem ~= '' then
  ikey = P .. 'idem:' .. sender .. ':' .. idem
  local seen = redis.call('HMGET', ikey, 'at', 'answer')
  if seen[1] and tonumber(seen[1]) > tonumber(cutoff) then
    return {'duplicate', seen[2]}
  end
end
local reached, full = {}, {}
for at = first_target, #ARGV, 4 do
  local n = depth(ARGV[at], now)
  if n >= max_inbox then
    full[#full + 1] = ARGV[at]
    full[#full + 1] = n
  else
    reached[#reached + 1] = at
  end
end
if #full > 0 and refuse_full then
  return {'full', {}, full}
end
if ARGV[15] ~= '' then
  local charged = take_tokens(ARGV[15], ARGV[16], ARGV[17], ARGV[18], now)
  if charged[1] == 0 then
    return {'limited', charged[2], charged[3]}
  end
end
store_message(mid, 20, nfields, #reached, now)
if ikey then
  redis.call('HSET', ikey, 'at', now, 'answer', answer)
  redis.call('EXPIRE', ikey, idem_ttl)
end
local to = {}
for _, at in ipairs(reached) do
  to[#to + 1] = add_delivery(mid, at, priority, protocol, expires, now)
end
return {'stored', to, full}

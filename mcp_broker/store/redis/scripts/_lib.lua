-- Prepended to every script. KEYS[1] is the namespace's prefix, "mb:{<namespace>}:": the hash tag
-- routes the call to the namespace's one Cluster slot, and every key below starts with it.
-- Times arrive as decimal strings from the caller and are stored as given: Lua 5.1 prints numbers
-- with 14 digits, so no time is ever turned into a string here.
local P = KEYS[1]

local function key(kind, id)
  return P .. kind .. ':' .. id
end

local function dkey(r, mid)
  return P .. 'd:' .. r .. ':' .. mid
end

local function opt(value)
  if value == '' then return false end
  return value
end

-- Waiting deliveries (queued or leased, not expired): the contract's one definition of depth.
local function depth(r, now)
  return redis.call('ZCARD', key('ready', r)) + redis.call('ZCARD', key('later', r))
    - redis.call('ZCOUNT', key('exp', r), '-inf', now)
end

-- Out of every index of waiting deliveries.
local function unindex(r, mid)
  redis.call('ZREM', key('ready', r), mid)
  redis.call('ZREM', key('later', r), mid)
  redis.call('ZREM', key('exp', r), mid)
  redis.call('ZREM', key('tries', r), mid)
end

-- Acked or dead-lettered: prune finds it by when that happened.
local function finish(r, mid, now)
  unindex(r, mid)
  redis.call('ZADD', key('done', r), now, mid)
end

-- One event in the namespace's traffic log, appended by the script that makes the change
-- (see Store.events). ``ev`` is a stream whose ids are ``<n>-0`` for n from ``evseq``; ``evat``
-- indexes them by time, for ``since`` and for pruning. What a filter reads (sender, protocol) is
-- kept in the event, so a scan never opens the message.
local function event(kind, r, mid, attempt, reason, now)
  local n = redis.call('INCR', P .. 'evseq')
  local m = redis.call('HMGET', key('m', mid), 'sender_id', 'protocol', 'version', 'created_at')
  local f = {'at', now, 'k', kind, 'm', mid, 'r', r, 'a', attempt,
    's', m[1] or '', 'p', m[2] or '', 'v', m[3] or '', 'c', m[4] or now}
  if reason then
    f[#f + 1] = 'why'
    f[#f + 1] = reason
  end
  redis.call('XADD', P .. 'ev', n .. '-0', unpack(f))
  redis.call('ZADD', P .. 'evat', now, n)
end

local function ack_delivery(r, mid, now)
  local d = dkey(r, mid)
  redis.call('HSET', d, 'state', 'acked', 'acked_at', now, 'updated_at', now)
  redis.call('ZREM', key('dead', r), mid)
  finish(r, mid, now)
  event('acked', r, mid, redis.call('HGET', d, 'attempts'), false, now)
end

local function kill(r, mid, reason, now)
  local d = dkey(r, mid)
  redis.call('HSET', d, 'state', 'dead_lettered', 'reason', reason, 'updated_at', now)
  finish(r, mid, now)
  redis.call('ZADD', key('dead', r), redis.call('HGET', d, 'seq'), mid)
  event('dead_lettered', r, mid, redis.call('HGET', d, 'attempts'), reason, now)
end

-- Back in the queue (release, replay): visible at ``visible`` (in ``later`` when ``delayed``);
-- ``reset`` gives it fresh attempts and no expiry.
local function put_back(r, mid, visible, delayed, reset, now)
  local d = dkey(r, mid)
  redis.call('HSET', d, 'state', 'queued', 'visible_at', visible, 'updated_at', now)
  if reset then
    redis.call('HSET', d, 'attempts', 0)
    redis.call('HDEL', d, 'reason', 'expires_at')
  end
  unindex(r, mid)
  redis.call('ZREM', key('dead', r), mid)
  redis.call('ZREM', key('done', r), mid)
  local fields = redis.call('HMGET', d, 'rank', 'attempts', 'expires_at')
  if delayed then
    redis.call('ZADD', key('later', r), visible, mid)
  else
    redis.call('ZADD', key('ready', r), fields[1], mid)
  end
  if tonumber(fields[2]) > 0 then redis.call('ZADD', key('tries', r), fields[2], mid) end
  if fields[3] then redis.call('ZADD', key('exp', r), fields[3], mid) end
  redis.call('SADD', P .. 'inboxes', r)
end

-- A session as a flat field list, with its depth appended when ``now`` is given; false if none.
local function session(id, now)
  local s = redis.call('HGETALL', key('s', id))
  if #s == 0 then return false end
  if now then
    s[#s + 1] = 'queue_depth'
    s[#s + 1] = tostring(depth(id, now))
  end
  return s
end

-- {message id, delivery fields, message fields, sender name}; false if there is no such delivery.
local function inbox_row(r, mid)
  local d = redis.call('HGETALL', dkey(r, mid))
  if #d == 0 then return false end
  local m = key('m', mid)
  local sender = redis.call('HGET', m, 'sender_id')
  local name = false
  if sender then name = redis.call('HGET', key('s', sender), 'name') end
  return {mid, d, redis.call('HGETALL', m), name}
end

-- Store a message from ARGV[first .. first + 2 * nfields - 1] (field, value pairs).
-- ``pos`` is the order messages were stored in (``mseq``): what history pages by, in the
-- sender's ``hist:<id>`` and each recipient's.
local function store_message(mid, first, nfields, live, now)
  local m = key('m', mid)
  redis.call('HSET', m, unpack(ARGV, first, first + 2 * nfields - 1))
  local pos = redis.call('INCR', P .. 'mseq')
  redis.call('HSET', m, 'live', live, 'pos', pos)
  redis.call('ZADD', P .. 'msgs', now, mid)
  redis.call('ZADD', key('hist', redis.call('HGET', m, 'sender_id')), pos, mid)
  local kind, corr = unpack(redis.call('HMGET', m, 'kind', 'correlation_id'))
  if kind == 'reply' and corr then
    redis.call('RPUSH', key('rp', corr), mid)
  end
end

-- One queued delivery of ``mid`` to ``r``; ARGV[at .. at + 3] = recipient, version, payload, adapted_via.
local function add_delivery(mid, at, priority, protocol, expires, now)
  local r = ARGV[at]
  local seq = redis.call('INCR', P .. 'seq')
  -- Priority first (high first), then the order stored; exact while |priority| < 512.
  local rank = -priority * 17592186044416 + seq
  local d = dkey(r, mid)
  redis.call('HSET', d, 'seq', seq, 'rank', rank, 'state', 'queued', 'attempts', 0,
    'visible_at', now, 'updated_at', now, 'priority', priority, 'protocol', protocol)
  if expires then
    redis.call('HSET', d, 'expires_at', expires)
    redis.call('ZADD', key('exp', r), expires, mid)
  end
  local names = {'version', 'payload', 'adapted_via'}
  for i = 1, 3 do
    if ARGV[at + i] ~= '' then redis.call('HSET', d, names[i], ARGV[at + i]) end
  end
  -- A stream's chunk carries its place, for the lease's in-order rule (``in_order``).
  local m = redis.call('HMGET', key('m', mid), 'stream_id', 'stream_seq', 'pos')
  if m[1] then redis.call('HSET', d, 'stream_id', m[1]) end
  if m[2] then redis.call('HSET', d, 'stream_seq', m[2]) end
  redis.call('ZADD', key('hist', r), m[3], mid)
  redis.call('ZADD', key('ready', r), rank, mid)
  redis.call('RPUSH', key('to', mid), r)
  redis.call('SADD', P .. 'inboxes', r)
  event('sent', r, mid, 0, false, now)
  return r
end

-- Numbers as text: a number leaving Lua is truncated to an integer.
local function text(x) return string.format('%.17g', x) end

-- Take ``cost`` tokens from a session's bucket (refilled at ``rate`` per second up to ``burst``,
-- starting full), or none (see Store.charge): {1 or 0, tokens left, seconds until enough} as text.
local function take_tokens(session, cost, rate, burst, now)
  local b = key('rb', session)
  cost, rate, burst = tonumber(cost), tonumber(rate), tonumber(burst)
  local found = redis.call('HMGET', b, 'tokens', 'updated_at')
  local tokens = burst
  if found[1] then
    tokens = math.min(burst, tonumber(found[1]) + math.max(0, tonumber(now) - tonumber(found[2])) * rate)
  end
  if tokens < cost then
    return {0, text(tokens), text((cost - tokens) / rate)}
  end
  redis.call('HSET', b, 'tokens', text(tokens - cost), 'updated_at', now)
  redis.call('SADD', P .. 'buckets', session)
  return {1, text(tokens - cost), '0'}
end

-- Whether a stream's chunk may be handed out: every earlier chunk of its stream still stored is
-- acked. Chunks are leased one at a time in order, so the nearest earlier one that is still there
-- decides: it was acked only once everything before it was.
local function in_order(r, stream, seq)
  if not seq then return true end
  local chunks = key('sc', stream)
  for n = tonumber(seq) - 1, 1, -1 do
    local mid = redis.call('HGET', chunks, n)
    local state = mid and redis.call('HGET', dkey(r, mid), 'state')
    if state then return state == 'acked' end
  end
  return true
end

-- One delivery for message_status and history: message id, broadcast, protocol, version,
-- created_at, recipient, recipient name, then the delivery's ``STATUS`` fields; false if none.
local STATUS = {'seq', 'state', 'reason', 'attempts', 'visible_at', 'expires_at', 'updated_at',
  'acked_at', 'version'}
local function status_row(mid, r)
  local d = redis.call('HMGET', dkey(r, mid), unpack(STATUS))
  if not d[1] then return false end
  local m = redis.call('HMGET', key('m', mid), 'broadcast', 'protocol', 'version', 'created_at')
  local row = {mid, m[1], m[2], m[3], m[4], r, redis.call('HGET', key('s', r), 'name')}
  for f = 1, #STATUS do row[#row + 1] = d[f] end
  return row
end

-- What one decision needs, read at one instant (see Store.snapshot).
-- ARGV: now, with depths (1/0), all sessions (1/0), agreed_by ('' none), number of protocols
-- ('*' for every protocol), the protocol names, number of session ids, the ids, then
-- (ref, is_id 1/0) pairs. Returns {sessions, refs, versions, adapters, agreed}.
local now, with_depth, all, agreed_by = ARGV[1], ARGV[2] == '1', ARGV[3] == '1', ARGV[4]
local at = 5
local protocols
if ARGV[at] == '*' then
  protocols = redis.call('SUNION', P .. 'protocols', P .. 'adapted')
  at = at + 1
else
  local n = tonumber(ARGV[at])
  protocols = {unpack(ARGV, at + 1, at + n)}
  at = at + 1 + n
end
local nids = tonumber(ARGV[at])
local ids = {unpack(ARGV, at + 1, at + nids)}
at = at + 1 + nids

local depth_at = with_depth and now or false
local sessions, seen = {}, {}
local function add(id)
  if seen[id] == nil then
    seen[id] = false
    local s = session(id, depth_at)
    if s then
      seen[id] = true
      sessions[#sessions + 1] = s
    end
  end
  return seen[id]
end
if all then
  depth_at = now
  local names = redis.call('HVALS', P .. 'names')
  for _, id in ipairs(names) do add(id) end
end
for _, id in ipairs(ids) do add(id) end
local refs = {}
for i = at, #ARGV, 2 do
  local ref, id = ARGV[i], ARGV[i]
  if ARGV[i + 1] ~= '1' then id = redis.call('HGET', P .. 'names', ref) end
  if id and (all and seen[id] or not all and add(id)) then
    refs[#refs + 1] = ref
    refs[#refs + 1] = id
  end
end

local versions, adapters = {}, {}
for _, name in ipairs(protocols) do
  versions[#versions + 1] = {name, redis.call('HGETALL', key('pc', name))}
  adapters[#adapters + 1] = {name, redis.call('HVALS', key('ad', name))}
end
local agreed = {}
if agreed_by ~= '' then
  local rows = redis.call('HGETALL', key('ag', agreed_by))
  for i = 1, #rows, 2 do
    local cut = string.find(rows[i], '\0', 1, true)
    local peer = string.sub(rows[i], 1, cut - 1)
    if peer ~= agreed_by and seen[peer] then
      agreed[#agreed + 1] = rows[i]
      agreed[#agreed + 1] = rows[i + 1]
    end
  end
end
return {sessions, refs, versions, adapters, agreed}

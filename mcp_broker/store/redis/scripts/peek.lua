-- This recipient's waiting deliveries in lease order, without leasing them. ARGV: recipient, limit, now.
local r, limit, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local function live(mid)
  local expires = redis.call('HGET', dkey(r, mid), 'expires_at')
  return not expires or tonumber(expires) > now
end
-- The first ``limit`` live ones of each index (ready by rank; later, re-sorted by rank), merged.
local ready = {}
local start = 0
while #ready < limit do
  local page = redis.call('ZRANGE', key('ready', r), start, start + 99, 'WITHSCORES')
  if #page == 0 then break end
  for i = 1, #page, 2 do
    if #ready < limit and live(page[i]) then ready[#ready + 1] = {page[i], tonumber(page[i + 1])} end
  end
  start = start + 100
end
local later = {}
for _, mid in ipairs(redis.call('ZRANGE', key('later', r), 0, -1)) do
  if live(mid) then later[#later + 1] = {mid, tonumber(redis.call('HGET', dkey(r, mid), 'rank'))} end
end
table.sort(later, function(a, b) return a[2] < b[2] end)
local rows, i, j = {}, 1, 1
while #rows < limit and (ready[i] or later[j]) do
  local pick
  if not later[j] or (ready[i] and ready[i][2] < later[j][2]) then
    pick = ready[i][1]; i = i + 1
  else
    pick = later[j][1]; j = j + 1
  end
  rows[#rows + 1] = inbox_row(r, pick)
end
return rows

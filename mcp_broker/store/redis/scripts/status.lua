-- Every delivery of these messages, when ``sender`` sent them. ARGV: sender, message ids.
-- Returns {known ids, rows} (rows as ``status_row``).
local sender = ARGV[1]
local known, rows = {}, {}
for i = 2, #ARGV do
  local mid = ARGV[i]
  if redis.call('HGET', key('m', mid), 'sender_id') == sender then
    known[#known + 1] = mid
    for _, r in ipairs(redis.call('LRANGE', key('to', mid), 0, -1)) do
      local row = status_row(mid, r)
      if row then rows[#rows + 1] = row end
    end
  end
end
return {known, rows}

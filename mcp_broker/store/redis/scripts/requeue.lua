-- Queue deliveries in ``from_states`` again (see Store.requeue).
-- ARGV: recipient, now, visible at, delayed (1/0), reset attempts (1/0), max_inbox ('' none),
-- number of states, the states, then the message ids (distinct).
local r, now, visible = ARGV[1], ARGV[2], ARGV[3]
local delayed, reset, max_inbox = ARGV[4] == '1', ARGV[5] == '1', opt(ARGV[6])
local nstates = tonumber(ARGV[7])
local from = {}
for i = 8, 7 + nstates do from[ARGV[i]] = true end
local first = 8 + nstates
local states, missing, movable = {}, {}, {}
for i = first, #ARGV do
  local state = redis.call('HGET', dkey(r, ARGV[i]), 'state')
  if not state then missing[#missing + 1] = ARGV[i] end
  states[#states + 1] = state
  if state and from[state] then movable[#movable + 1] = ARGV[i] end
end
if #missing > 0 then
  return {'unknown', missing}
end
if max_inbox and #movable > 0 then
  local n = depth(r, now)
  if n + #movable > tonumber(max_inbox) then
    return {'full', states, n}
  end
end
for _, mid in ipairs(movable) do
  put_back(r, mid, visible, delayed, reset, now)
  event(reset and 'replayed' or 'released', r, mid, 0, false, now)
end
return {'done', states}

-- This recipient's deliveries of the given messages, as inbox rows. ARGV: recipient, message ids.
local rows = {}
for i = 2, #ARGV do
  rows[#rows + 1] = inbox_row(ARGV[1], ARGV[i])
end
return rows

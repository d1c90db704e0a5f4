-- Take tokens from a session's bucket, or none (see Store.charge and take_tokens).
-- ARGV: session, cost, rate, burst, now.
return take_tokens(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])

-- The store contract: a session's revision (bumped by every claim, re-checked by a conditional send),
-- wake-ups addressed by session id rather than a socket path, and dead-letter reasons as codes.
ALTER TABLE sessions ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions DROP COLUMN bell;
UPDATE deliveries SET reason = 'max_attempts' WHERE state = 'dead_lettered' AND reason LIKE 'not acked after %'

-- Message features: replays marked with their original, ordered streams, rate buckets, history reads.
ALTER TABLE messages ADD COLUMN replay_of TEXT;
ALTER TABLE messages ADD COLUMN stream_id TEXT;
ALTER TABLE messages ADD COLUMN stream_seq INTEGER;
ALTER TABLE messages ADD COLUMN last INTEGER NOT NULL DEFAULT 0;
-- A chunk's delivery carries its place, so a lease can tell whether every earlier chunk is acked.
ALTER TABLE deliveries ADD COLUMN stream_id TEXT;
ALTER TABLE deliveries ADD COLUMN stream_seq INTEGER;
CREATE INDEX deliveries_stream ON deliveries (stream_id, recipient_id, stream_seq) WHERE stream_id IS NOT NULL;
-- History reads what a session sent by this index, and what it received through the deliveries'
-- (message_id, recipient_id) key; no index on deliveries by recipient alone, which the planner
-- would prefer over the covering pending index that every send's depth count reads.
CREATE INDEX messages_sender ON messages (sender_id, created_at);

CREATE TABLE streams (
    id           TEXT PRIMARY KEY,
    sender_id    TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    version      TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'open',   -- open | closed | aborted
    reason       TEXT,
    opened_at    REAL NOT NULL,
    last_at      REAL NOT NULL,
    chunks       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX streams_open ON streams (state, last_at) WHERE state = 'open';
CREATE INDEX streams_sender ON streams (sender_id) WHERE state = 'open';

CREATE TABLE rate_buckets (
    session_id TEXT PRIMARY KEY,
    tokens     REAL NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID
;
-- The pending index carries a chunk's place too, so a long-poll's look for work stays index-only.
DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending ON deliveries (recipient_id, priority DESC, seq, expires_at, visible_at, stream_seq)
    WHERE state IN ('queued', 'leased')

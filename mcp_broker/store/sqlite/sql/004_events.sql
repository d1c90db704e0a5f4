-- Every change of a delivery's state, appended in the transaction that makes it: traffic for people.
-- Names, protocol and versions are joined in from messages, deliveries and sessions when read.
CREATE TABLE events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           REAL NOT NULL,
    kind         TEXT NOT NULL,   -- sent | leased | acked | released | replayed | dead_lettered | purged
    message_id   TEXT NOT NULL,
    recipient_id TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0,
    reason       TEXT
);
CREATE INDEX events_message ON events (message_id);
CREATE INDEX events_at ON events (at)

-- The broker's whole shared state. Times are Unix seconds (REAL); JSON columns hold canonical JSON text.

CREATE TABLE protocols (
    name          TEXT NOT NULL,
    version       TEXT NOT NULL,
    schema        TEXT NOT NULL,
    capabilities  TEXT NOT NULL,
    metadata      TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,   -- hash of the definition: same pair + same hash = identical re-registration
    registered_at REAL NOT NULL,
    response_schema TEXT,          -- for request_response protocols: the schema replies must match
    PRIMARY KEY (name, version)
) WITHOUT ROWID;

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    protocols       TEXT NOT NULL,
    features        TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    owner           TEXT,            -- the broker process instance bound to it
    host            TEXT,
    pid             INTEGER,
    proc_start      TEXT,            -- the process's start time, so a reused pid is not mistaken for it
    bell            TEXT,            -- the doorbell socket its process listens on
    connected_at    REAL NOT NULL,
    last_seen       REAL NOT NULL,
    disconnected_at REAL
);

CREATE TABLE agreements (
    session_id TEXT NOT NULL,
    peer_id    TEXT NOT NULL,
    protocol   TEXT NOT NULL,
    version    TEXT NOT NULL,
    agreed_at  REAL NOT NULL,
    PRIMARY KEY (session_id, peer_id, protocol)
) WITHOUT ROWID;

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    sender_id       TEXT NOT NULL,
    broadcast       INTEGER NOT NULL DEFAULT 0,
    kind            TEXT NOT NULL DEFAULT 'message',   -- message | request | reply
    protocol        TEXT NOT NULL,
    version         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    correlation_id  TEXT,
    reply_to        TEXT,
    priority        INTEGER NOT NULL,
    created_at      REAL NOT NULL,
    expires_at      REAL,
    idempotency_key TEXT,
    result          TEXT             -- the first send answer, replayed for a repeated idempotency_key
);
CREATE INDEX messages_idempotency ON messages (sender_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX messages_correlation ON messages (correlation_id) WHERE correlation_id IS NOT NULL;

-- One row per (message, recipient): the delivery state machine queued -> leased -> acked | dead_lettered.
CREATE TABLE deliveries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,   -- send order, the FIFO key
    message_id   TEXT NOT NULL REFERENCES messages (id),
    recipient_id TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    expires_at   REAL,
    state        TEXT NOT NULL DEFAULT 'queued',
    attempts     INTEGER NOT NULL DEFAULT 0,
    visible_at   REAL NOT NULL,                        -- queued: now; leased: when the lease runs out
    updated_at   REAL NOT NULL,
    acked_at     REAL,
    reason       TEXT,
    version      TEXT,                                 -- set when an adapter changed the version for this recipient
    payload      TEXT,                                 -- the payload as transformed for this recipient
    adapted_via  TEXT,                                 -- the adapter path, e.g. "1.0.0>1.1.0>2.0.0"
    UNIQUE (message_id, recipient_id)
);
CREATE INDEX deliveries_pending ON deliveries (recipient_id, priority DESC, seq)
    WHERE state IN ('queued', 'leased');
CREATE INDEX deliveries_done ON deliveries (state, updated_at) WHERE state IN ('acked', 'dead_lettered');
CREATE INDEX deliveries_dead ON deliveries (recipient_id, seq) WHERE state = 'dead_lettered';

-- Declarative payload transformations between two versions of one protocol; immutable like protocols.
CREATE TABLE adapters (
    protocol      TEXT NOT NULL,
    from_version  TEXT NOT NULL,
    to_version    TEXT NOT NULL,
    steps         TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (protocol, from_version, to_version)
) WITHOUT ROWID;

-- Namespaces in one file: every row belongs to one (rows from before go to 'default'), every key that
-- people choose (a session's name, a protocol's name and version, an adapter's versions) is unique
-- within its namespace only, every index a scan or a count reads leads with it, and every statement
-- names it through ns(), a function the connection registers at open: one store, one namespace.
CREATE TABLE sessions_new (
    id              TEXT PRIMARY KEY,
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    protocols       TEXT NOT NULL,
    features        TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    owner           TEXT,
    host            TEXT,
    pid             INTEGER,
    proc_start      TEXT,
    connected_at    REAL NOT NULL,
    last_seen       REAL NOT NULL,
    disconnected_at REAL,
    revision        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (namespace, name)
);
INSERT INTO sessions_new (id, namespace, name, protocols, features, metadata, owner, host, pid, proc_start,
    connected_at, last_seen, disconnected_at, revision)
    SELECT id, 'default', name, protocols, features, metadata, owner, host, pid, proc_start,
    connected_at, last_seen, disconnected_at, revision FROM sessions;
DROP TABLE sessions;
ALTER TABLE sessions_new RENAME TO sessions;

CREATE TABLE protocols_new (
    namespace       TEXT NOT NULL,
    name            TEXT NOT NULL,
    version         TEXT NOT NULL,
    schema          TEXT NOT NULL,
    capabilities    TEXT NOT NULL,
    metadata        TEXT NOT NULL,
    fingerprint     TEXT NOT NULL,
    registered_at   REAL NOT NULL,
    response_schema TEXT,
    PRIMARY KEY (namespace, name, version)
) WITHOUT ROWID;
INSERT INTO protocols_new (namespace, name, version, schema, capabilities, metadata, fingerprint,
    registered_at, response_schema)
    SELECT 'default', name, version, schema, capabilities, metadata, fingerprint, registered_at,
    response_schema FROM protocols;
DROP TABLE protocols;
ALTER TABLE protocols_new RENAME TO protocols;

CREATE TABLE adapters_new (
    namespace     TEXT NOT NULL,
    protocol      TEXT NOT NULL,
    from_version  TEXT NOT NULL,
    to_version    TEXT NOT NULL,
    steps         TEXT NOT NULL,
    fingerprint   TEXT NOT NULL,
    registered_at REAL NOT NULL,
    PRIMARY KEY (namespace, protocol, from_version, to_version)
) WITHOUT ROWID;
INSERT INTO adapters_new (namespace, protocol, from_version, to_version, steps, fingerprint, registered_at)
    SELECT 'default', protocol, from_version, to_version, steps, fingerprint, registered_at FROM adapters;
DROP TABLE adapters;
ALTER TABLE adapters_new RENAME TO adapters;

-- Rows keyed by an id the broker mints (128 random bits) keep their keys; the column makes every
-- scan and count of them one namespace's.
ALTER TABLE agreements ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE messages ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE deliveries ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE events ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE streams ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE rate_buckets ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';

DROP INDEX deliveries_pending;
CREATE INDEX deliveries_pending
    ON deliveries (namespace, recipient_id, priority DESC, seq, expires_at, visible_at, stream_seq)
    WHERE state IN ('queued', 'leased');
DROP INDEX deliveries_done;
CREATE INDEX deliveries_done ON deliveries (namespace, state, updated_at) WHERE state IN ('acked', 'dead_lettered');
DROP INDEX deliveries_dead;
CREATE INDEX deliveries_dead ON deliveries (namespace, recipient_id, seq) WHERE state = 'dead_lettered';
CREATE INDEX deliveries_dead_all ON deliveries (namespace, seq) WHERE state = 'dead_lettered';
DROP INDEX events_at;
CREATE INDEX events_at ON events (namespace, at);
CREATE INDEX events_namespace ON events (namespace, seq);
CREATE INDEX messages_namespace ON messages (namespace, created_at);
DROP INDEX streams_open;
CREATE INDEX streams_open ON streams (namespace, state, last_at) WHERE state = 'open'

-- The mcp-broker version of the process holding a session, so doctor can tell versions apart.
ALTER TABLE sessions ADD COLUMN broker_version TEXT

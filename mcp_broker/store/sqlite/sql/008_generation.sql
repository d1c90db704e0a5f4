-- A counter every change to what a send decides on bumps (sessions, protocols, adapters, agreements),
-- in the changing transaction itself, whichever process and version makes it. A process keeps the
-- snapshots it read and reuses one while the counter stands still: a send then reads one row, not six.
CREATE TABLE generation (id INTEGER PRIMARY KEY CHECK (id = 0), n INTEGER NOT NULL);
INSERT INTO generation (id, n) VALUES (0, 0);
CREATE TRIGGER generation_sessions_insert AFTER INSERT ON sessions BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_sessions_update AFTER UPDATE ON sessions BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_sessions_delete AFTER DELETE ON sessions BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_protocols_insert AFTER INSERT ON protocols BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_protocols_update AFTER UPDATE ON protocols BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_protocols_delete AFTER DELETE ON protocols BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_adapters_insert AFTER INSERT ON adapters BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_adapters_update AFTER UPDATE ON adapters BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_adapters_delete AFTER DELETE ON adapters BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_agreements_insert AFTER INSERT ON agreements BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_agreements_update AFTER UPDATE ON agreements BEGIN UPDATE generation SET n = n + 1; END;
CREATE TRIGGER generation_agreements_delete AFTER DELETE ON agreements BEGIN UPDATE generation SET n = n + 1; END


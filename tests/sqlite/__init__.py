"""SQLite tier: what only the SQLite engine does (its file, WAL, migrations, locks, doorbells)."""

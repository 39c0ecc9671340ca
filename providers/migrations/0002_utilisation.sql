-- Simulated CPU and memory utilisation per instance, set with `chimera local mutate`. Kept
-- apart from `objects.attrs`: it is a reading, not configuration, so it never shows as drift.
CREATE TABLE utilisation (
    id TEXT PRIMARY KEY,
    cpu_percent REAL NOT NULL,
    memory_percent REAL NOT NULL
);

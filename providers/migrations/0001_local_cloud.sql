-- The local provider's simulated cloud.
CREATE TABLE objects (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    native_region TEXT NOT NULL,
    attrs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    tags TEXT NOT NULL,
    token TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX objects_token ON objects (token);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);

-- Chimera state schema v1 for PostgreSQL: the same tables as SQLite's (state/migrations).
CREATE TABLE stacks (
    name TEXT PRIMARY KEY,
    lineage TEXT NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE generations (
    stack TEXT NOT NULL REFERENCES stacks(name),
    serial BIGINT NOT NULL,
    parent BIGINT,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    plan_hash TEXT,
    desired_hash TEXT,
    actor TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (stack, serial)
);

CREATE TABLE resources (
    stack TEXT NOT NULL,
    address TEXT NOT NULL,
    valid_from BIGINT NOT NULL,
    valid_to BIGINT,
    kind TEXT NOT NULL,
    provider TEXT NOT NULL,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    outputs TEXT NOT NULL,
    cloud_id TEXT NOT NULL,
    deps TEXT NOT NULL,
    PRIMARY KEY (stack, address, valid_from)
);
CREATE INDEX resources_current ON resources (stack, valid_to);

CREATE TABLE intents (
    id BIGSERIAL PRIMARY KEY,
    stack TEXT NOT NULL,
    serial BIGINT NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    client_token TEXT NOT NULL,
    payload TEXT,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT
);
CREATE INDEX intents_pending ON intents (stack) WHERE status = 'pending';

CREATE TABLE audit (
    id BIGSERIAL PRIMARY KEY,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);

-- The lock's record; the lock itself is a session advisory lock held by the connection whose
-- backend is `backend_pid`, for the whole lock lifetime.
CREATE TABLE locks (
    stack TEXT PRIMARY KEY,
    lock_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at TEXT NOT NULL,
    operation TEXT NOT NULL,
    backend_pid INTEGER NOT NULL
);

-- Chimera state schema v1: append-only and temporal, like Nix generations.
CREATE TABLE stacks (
    name TEXT PRIMARY KEY,
    lineage TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- One row per apply (or rollback, import, refresh). `status` is 'applying' until the apply ends,
-- then 'complete' or 'partial' (some actions failed).
CREATE TABLE generations (
    stack TEXT NOT NULL REFERENCES stacks(name),
    serial INTEGER NOT NULL,
    parent INTEGER,
    created_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    plan_hash TEXT,
    desired_hash TEXT,
    actor TEXT NOT NULL,
    message TEXT NOT NULL,
    PRIMARY KEY (stack, serial)
);

-- A resource row is valid from the generation that wrote it until the one that replaced or
-- deleted it (`valid_to`); current state is `valid_to IS NULL`.
CREATE TABLE resources (
    stack TEXT NOT NULL,
    address TEXT NOT NULL,
    valid_from INTEGER NOT NULL,
    valid_to INTEGER,
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

-- The apply write-ahead log: an intent is durable before its provider call.
CREATE TABLE intents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stack TEXT NOT NULL,
    serial INTEGER NOT NULL,
    address TEXT NOT NULL,
    action TEXT NOT NULL,
    client_token TEXT NOT NULL,
    -- For creates and updates: the state row to write once the call succeeds (JSON), so that
    -- recovery can adopt a resource whose call finished but whose result was never recorded.
    payload TEXT,
    status TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    error TEXT
);
CREATE INDEX intents_pending ON intents (stack, status);

CREATE TABLE audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);

CREATE TABLE locks (
    stack TEXT PRIMARY KEY,
    lock_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    operation TEXT NOT NULL
);

-- Sensitive values, sealed (AES-256-GCM envelopes; chimera-seal), by the digest resource rows
-- keep in their place, so a rollback can restore a value state otherwise only has a digest of.
-- Written only when an encryption key is configured; never plaintext.
CREATE TABLE sealed_values (
    stack TEXT NOT NULL,
    digest TEXT NOT NULL,
    key_id TEXT NOT NULL,
    envelope TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (stack, digest)
);

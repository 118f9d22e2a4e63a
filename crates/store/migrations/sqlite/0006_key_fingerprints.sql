-- A fingerprint of each server key, recorded on the first start on this database: every process
-- (replica) must start with the same keys, and one whose keys differ refuses to start.
CREATE TABLE key_fingerprints (
    name        TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    recorded_at INTEGER NOT NULL
);

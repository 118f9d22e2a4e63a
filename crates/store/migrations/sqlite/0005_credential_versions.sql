-- A version of each runner's credential set, bumped in the same transaction as every change to it
-- (refresh, ending an overlap, grace expiry). Caches of credentials record the version they read
-- and a load older than a change that was already announced is never installed.
ALTER TABLE runners ADD COLUMN credentials_version INTEGER NOT NULL DEFAULT 1;
-- Who revoked a generation (a user, or `system` when its grace period ended).
ALTER TABLE credentials ADD COLUMN revoked_by TEXT;

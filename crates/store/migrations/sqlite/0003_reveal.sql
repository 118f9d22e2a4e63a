-- The newest secret of a refresh, encrypted (AES-256-GCM under a key derived from the server's
-- master key), kept only until reveal_until so the operator can reveal it again; then deleted.
ALTER TABLE credentials ADD COLUMN sealed_secret BLOB;
ALTER TABLE credentials ADD COLUMN reveal_until INTEGER;
CREATE INDEX credentials_sealed ON credentials (reveal_until) WHERE sealed_secret IS NOT NULL;
CREATE INDEX credentials_retiring ON credentials (expires_at) WHERE state = 'retiring';

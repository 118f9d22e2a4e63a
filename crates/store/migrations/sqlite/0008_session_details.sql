-- What the holding replica knows of each instance (see the PostgreSQL migration of the same
-- name); kept here too so both backends have one registry.
ALTER TABLE runner_sessions ADD COLUMN hostname TEXT NOT NULL DEFAULT '';
ALTER TABLE runner_sessions ADD COLUMN secret_source TEXT;
ALTER TABLE runner_sessions ADD COLUMN hot_reload INTEGER;
ALTER TABLE runner_sessions ADD COLUMN secret_file TEXT;
ALTER TABLE runner_sessions ADD COLUMN generation_since INTEGER;

-- API tokens may expire, and record when they were last used (written in batches).
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT, ADD COLUMN last_used_at BIGINT;

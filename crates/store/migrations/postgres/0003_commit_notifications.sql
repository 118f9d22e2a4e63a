-- Every change the other replicas must not miss notifies them in the transaction that makes it, so
-- the notification is sent if and only if the change commits: a replica that commits a revocation
-- and dies (or whose own NOTIFY afterwards fails) cannot leave the others trusting a stale cache.
-- The replica that made the change still sends its detailed event after the commit; these are the
-- floor under it. The channel is the one `postgres::events` listens on, and each payload is an
-- events envelope (`events::wire` in the server): the origin is the sender's application_name
-- ("tether <replica id>"), and the receiver re-reads whatever the message names.

CREATE FUNCTION tether_notify(message JSONB) RETURNS VOID LANGUAGE SQL AS $$
    SELECT pg_notify(
        'tether_events',
        (jsonb_build_object('origin', current_setting('application_name')) || message)::TEXT
    )
$$;

-- Credentials changed: every change bumps the runner's credentials_version in its transaction.
CREATE FUNCTION tether_credentials_committed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tether_notify(jsonb_build_object(
        'kind', 'credentials_committed',
        'runner', NEW.id,
        'version', NEW.credentials_version));
    RETURN NULL;
END
$$;
CREATE TRIGGER runners_credentials_committed
    AFTER UPDATE OF credentials_version ON runners
    FOR EACH ROW WHEN (NEW.credentials_version IS DISTINCT FROM OLD.credentials_version)
    EXECUTE FUNCTION tether_credentials_committed();

CREATE FUNCTION tether_runner_deleted() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tether_notify(jsonb_build_object(
        'kind', 'runner_deleted',
        'runner', OLD.id,
        'client_id', OLD.client_id));
    RETURN NULL;
END
$$;
CREATE TRIGGER runners_deleted
    AFTER DELETE ON runners
    FOR EACH ROW EXECUTE FUNCTION tether_runner_deleted();

CREATE FUNCTION tether_access_token_revoked() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tether_notify(jsonb_build_object(
        'kind', 'access_token_revoked',
        'jti', NEW.jti,
        -- The event carries unix seconds; the table keeps ms.
        'expires_at', NEW.expires_at / 1000));
    RETURN NULL;
END
$$;
CREATE TRIGGER revoked_tokens_inserted
    AFTER INSERT ON revoked_tokens
    FOR EACH ROW EXECUTE FUNCTION tether_access_token_revoked();

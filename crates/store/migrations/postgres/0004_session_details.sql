-- What the holding replica knows of each instance, so that every replica can show a runner's
-- instances (and its credential rollout) wherever they are connected.
ALTER TABLE runner_sessions
    ADD COLUMN hostname         TEXT NOT NULL DEFAULT '',
    ADD COLUMN secret_source    TEXT,
    ADD COLUMN hot_reload       BOOLEAN,
    ADD COLUMN secret_file      TEXT,
    -- When the session moved to its generation (it connected, or re-authenticated with a newer one).
    ADD COLUMN generation_since BIGINT;

-- A runner's status changed (written by the replica that derived it): the others tell their web
-- pages (`/ui/events`). Sent in the writing transaction, like the notifications of 0003.
CREATE FUNCTION tether_status_changed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tether_notify(jsonb_build_object('kind', 'status_changed', 'runner', NEW.id));
    RETURN NULL;
END
$$;
CREATE TRIGGER runners_status_changed
    AFTER UPDATE OF status, status_reason ON runners
    FOR EACH ROW WHEN (NEW.status IS DISTINCT FROM OLD.status
                       OR NEW.status_reason IS DISTINCT FROM OLD.status_reason)
    EXECUTE FUNCTION tether_status_changed();

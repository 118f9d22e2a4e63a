-- Applies a refreshed client_secret to a tether runner in Snowpark Container Services.
--
-- 1. Refresh the credentials in tether (UI: Runner details -> Credentials -> Refresh, or
--    `tether runners refresh-credentials <RUNNER>`) and copy the new client_secret
--    (Reveal, or `tether runners reveal <RUNNER>`).
-- 2. Replace <PASTE_THE_REFRESHED_CLIENT_SECRET> below with it and run this file. The secret name
--    and the service name are the ones setup.sql created; don't change the secret's name.
-- A running container keeps the secret it was started with, so the service is suspended and
-- resumed: the runner drains its running tasks on the way down and starts with the new secret.

USE ROLE tether_runner_role;

ALTER SECRET tether_db.runner.tether_client_secret
  SET SECRET_STRING = '<PASTE_THE_REFRESHED_CLIENT_SECRET>';

ALTER SERVICE tether_db.runner.tether_runner SUSPEND;
-- Wait until every container shows status SUSPENDED (run the SHOW below until it does), then resume.
SHOW SERVICE CONTAINERS IN SERVICE tether_db.runner.tether_runner;
ALTER SERVICE tether_db.runner.tether_runner RESUME;

-- The containers come back READY with the new secret, and the runner shows as running again in tether.
SHOW SERVICE CONTAINERS IN SERVICE tether_db.runner.tether_runner;

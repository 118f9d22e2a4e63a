-- Sets up a tether runner in Snowpark Container Services (SPCS).
--
-- Run it in a Snowsight worksheet (or snowsql) as a user who can use ACCOUNTADMIN. Before running,
-- replace:
--   tether.example.com                 the host of your control plane (TETHER_URL), twice: in the
--                                      network rule and in the specification
--   tcid_REPLACE_WITH_YOUR_CLIENT_ID   the runner's client_id (`tether runners create ... --platform snowflake`)
--   <CLIENT_SECRET>                    the runner's client_secret (shown once, at creation)
-- The specification below is the same text as deploy/snowflake/spec.yaml.
--
-- The runner connects outbound only: the service has no endpoints, so nothing can reach it, and its
-- only egress is the control plane host allowed by the network rule. The client_secret lives in a
-- Snowflake SECRET object (GENERIC_STRING) that the specification maps to OAUTH_CLIENT_SECRET.
-- To apply a refreshed client_secret later, run refresh.sql.

-- 1. As ACCOUNTADMIN: a role for the runner, a compute pool, a database, and egress to the control plane.
USE ROLE ACCOUNTADMIN;

CREATE ROLE IF NOT EXISTS tether_runner_role;
GRANT ROLE tether_runner_role TO ROLE SYSADMIN;

CREATE DATABASE IF NOT EXISTS tether_db;
CREATE SCHEMA IF NOT EXISTS tether_db.runner;
GRANT OWNERSHIP ON DATABASE tether_db TO ROLE tether_runner_role COPY CURRENT GRANTS;
GRANT OWNERSHIP ON SCHEMA tether_db.runner TO ROLE tether_runner_role COPY CURRENT GRANTS;

CREATE COMPUTE POOL IF NOT EXISTS tether_pool
  MIN_NODES = 1
  MAX_NODES = 2
  INSTANCE_FAMILY = CPU_X64_XS
  AUTO_RESUME = TRUE;
GRANT USAGE, MONITOR ON COMPUTE POOL tether_pool TO ROLE tether_runner_role;

CREATE NETWORK RULE IF NOT EXISTS tether_db.runner.tether_control_plane
  MODE = EGRESS
  TYPE = HOST_PORT
  VALUE_LIST = ('tether.example.com:443');
CREATE EXTERNAL ACCESS INTEGRATION IF NOT EXISTS tether_control_plane_access
  ALLOWED_NETWORK_RULES = (tether_db.runner.tether_control_plane)
  ENABLED = TRUE;
GRANT USAGE ON INTEGRATION tether_control_plane_access TO ROLE tether_runner_role;

-- 2. As the runner's role: the image repository, the secret and the service.
USE ROLE tether_runner_role;
USE SCHEMA tether_db.runner;

CREATE IMAGE REPOSITORY IF NOT EXISTS tether_db.runner.images;
-- repository_url is where to push the image built from deploy/docker/Dockerfile:
--   docker login <repository_url host>; docker tag tether:0.1.0 <repository_url>/tether:0.1.0; docker push ...
SHOW IMAGE REPOSITORIES IN SCHEMA tether_db.runner;

CREATE SECRET IF NOT EXISTS tether_db.runner.tether_client_secret
  TYPE = GENERIC_STRING
  SECRET_STRING = '<CLIENT_SECRET>';

CREATE SERVICE IF NOT EXISTS tether_db.runner.tether_runner
  IN COMPUTE POOL tether_pool
  FROM SPECIFICATION $$
spec:
  containers:
    - name: tether-runner
      image: /tether_db/runner/images/tether:0.1.0
      args:
        - runner
      env:
        TETHER_URL: https://tether.example.com
        OAUTH_CLIENT_ID: tcid_REPLACE_WITH_YOUR_CLIENT_ID
        TETHER_PLATFORM: snowflake
        TETHER_MAX_TASKS: "20"
        TETHER_WORKDIR: /var/lib/tether/work
      secrets:
        - snowflakeSecret:
            objectName: tether_db.runner.tether_client_secret
          secretKeyRef: secret_string
          envVarName: OAUTH_CLIENT_SECRET
      resources:
        requests:
          cpu: 0.5
          memory: 1G
        limits:
          memory: 2G
  logExporters:
    eventTableConfig:
      logLevel: INFO
$$
  EXTERNAL_ACCESS_INTEGRATIONS = (tether_control_plane_access)
  MIN_INSTANCES = 2
  MAX_INSTANCES = 2;

-- Both instances should reach READY within a few minutes; the runner then shows as running in tether.
SHOW SERVICE CONTAINERS IN SERVICE tether_db.runner.tether_runner;

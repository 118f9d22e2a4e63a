//! Checks of the deployment templates (`deploy/`) and platform guides (`docs/platforms/`): one test
//! binary, one module per platform. The linters come from `scripts/install-deploy-tools`.

mod aws;
mod azure;
mod docker;
mod docs;
mod helm;
mod helm_server;
mod snowflake;
mod support;

//! Dev-only crate (never published): its integration tests, in `tests/deploy/`, check the
//! deployment templates under `deploy/` and the platform guides under `docs/platforms/` with the real
//! tools where they exist here (`cfn-lint`, `helm`, `kubernetes-validate`, the `sqlparser` crate's
//! Snowflake dialect) and by their structure where they don't (Bicep, Dockerfile).
//!
//! The tools are installed into the repository by `scripts/install-deploy-tools`; a missing tool
//! fails the tests with a message naming that script rather than skipping them.

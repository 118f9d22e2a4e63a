//! Integration tests of the control plane: the real server on a loopback port, its own SQLite
//! database per test, driven over HTTP.

mod audit;
mod connections;
mod credentials;
mod interop;
mod logs;
mod oauth;
mod ops;
mod pipelines;
mod replicas;
mod restart;
mod revocation;
mod roles;
mod rollout;
mod runners;
mod sessions;
mod users;
mod web;
mod ws;

//! Tests of the real `tether` binary: the admin commands against an in-process server, and the
//! server and runner as real processes (status transitions, signals, restarts).

mod admin;
mod apply;
mod credentials;
mod database;
mod local_apply;
mod pipelines;
mod procs;
mod replicas;
mod rotation;
mod runner;
mod runs;

//! Wire types: the JSON the control plane, the runner and the CLI exchange. Field names here are
//! the public contract of `/api/v1` and `/oauth`; domain and database types live elsewhere and are
//! mapped at the edge. Times are RFC 3339 UTC.

pub mod api;
pub mod oauth;
pub mod problem;
pub mod session;

pub use problem::Problem;

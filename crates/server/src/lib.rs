//! The tether control plane as a library: [`start`] binds and serves (tests and `--dev` use it
//! in-process); [`run`] is what `tether server` calls: telemetry, start, wait for a signal, drain.

/// Prints a line to stdout, ignoring errors: a closed stdout must not bring the server down.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod background;
pub mod clock;
mod command;
pub mod config;
mod dev;
pub mod dispatch;
pub mod drain;
pub mod events;
pub mod http;
pub mod jwt;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod replication;
pub mod runner_link;
pub mod seal;
pub mod services;
pub mod startup;
pub mod state;
pub mod telemetry;

pub use command::{run, run_with};
pub use config::{LogFormat, ServerArgs, ServerConfig};
pub use dev::{DevRunner, DevRunnerLauncher};
pub use services::bootstrap::Bootstrapped;
pub use startup::{start, RunningServer};
pub use tether_store::{DatabaseUrl, PoolSettings};

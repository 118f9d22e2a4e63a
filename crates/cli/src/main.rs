//! `tether`: one binary for the control plane (`server`), the agent (`runner`) and the admin
//! commands that talk to the REST API. Parses arguments and hands off; the work is in the libraries.

mod aws;
mod cli;
mod commands;
mod config;
mod duration;
mod next_steps;
mod output;
mod pipeline_file;
mod platform_steps;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Server(args) => match commands::server::run(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Runner(args) => {
            tether_server::telemetry::init(tether_server::LogFormat::Text);
            ExitCode::from(tether_runner::run(args).await.clamp(0, 255) as u8)
        }
        command => match commands::dispatch(&cli.global, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
    }
}

/// One readable line on stderr and exit code 1.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

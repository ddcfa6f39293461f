//! sluice-bench: a load generator for any Kafka-compatible broker.
//! See the README section "Load generator: sluice-bench" and issue 4.

mod admin;
mod app;
mod chart;
mod config;
mod consume;
mod copy;
mod histogram;
mod interrupt;
mod produce;
mod progress;
mod report;
mod run;
mod sweep;
mod wire;
mod workload;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = config::Cli::parse();
    interrupt::install();
    match app::main(cli) {
        Ok(false) => ExitCode::SUCCESS,
        // The run completed but had errors (failed deliveries, missing messages).
        Ok(true) => ExitCode::from(1),
        // It could not run at all (bad flags, unreachable broker).
        Err(e) => {
            eprintln!("sluice-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

//! The `sluice` binary: parse the configuration, start the shards, wait for
//! SIGTERM or SIGINT, shut down cleanly.

use std::process::ExitCode;

use clap::Parser;
use nix::sys::signal::{SigSet, Signal};
use sluice::config::{Cli, Config};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::resolve(cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::from(2);
        }
    };
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log_level.clone());
    if !filter.contains("openraft") {
        // openraft's own warnings are about transient states (a vote that
        // changed while an I/O completed, a voter unreachable at every
        // heartbeat); the quorum logs its leader changes itself.
        filter.push_str(",openraft=error");
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(filter) => filter,
        Err(error) => {
            eprintln!("sluice: invalid setting `log-level`: {error}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Block the stop signals in every thread (shards inherit the mask) and
    // receive them synchronously here.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(error) = signals.thread_block() {
        eprintln!("sluice: cannot block signals: {error}");
        return ExitCode::FAILURE;
    }

    let running = match sluice::broker::start(config) {
        Ok(running) => running,
        Err(error) => {
            eprintln!("sluice: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Scripts and tests read this line to learn the bound port.
    if let Some(addr) = running.metrics_addr {
        println!("sluice metrics on http://{addr}/metrics");
    }
    println!("sluice listening on {}", running.local_addr);
    tracing::info!(addr = %running.local_addr, data_dir = %running.node.config.data_dir.display(), "sluice is serving");

    let signal = signals.wait();
    tracing::info!(
        ?signal,
        "stopping: finishing in-flight requests, closing logs"
    );
    running.controlled_shutdown(std::time::Duration::from_secs(10));
    running.shutdown();
    running.join();
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

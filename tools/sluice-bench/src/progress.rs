//! Live progress on stderr, once a second, when stderr is a terminal and CI
//! is not set: a script that pipes the output or a CI log gets only results.

use std::io::{IsTerminal, Write};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::workload::Shared;

/// Whether live progress is wanted at all.
pub fn enabled() -> bool {
    std::io::stderr().is_terminal() && std::env::var("CI").map_or(true, |v| v != "true")
}

pub struct Progress {
    stop: Option<mpsc::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts printing for a run (a no-op if `on` is false). `label` prefixes
    /// each line, e.g. the sweep point.
    pub fn start(shared: Arc<Shared>, label: String, on: bool) -> Progress {
        if !on {
            return Progress {
                stop: None,
                handle: None,
            };
        }
        let (tx, rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name("progress".into())
            .spawn(move || {
                let start = Instant::now();
                let mut last = Snapshot::of(&shared);
                let mut last_t = Instant::now();
                loop {
                    match rx.recv_timeout(Duration::from_secs(1)) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                    let now = Snapshot::of(&shared);
                    let dt = last_t.elapsed().as_secs_f64().max(1e-9);
                    last_t = Instant::now();
                    let mut line = format!("[{:>4.0}s] {label}", start.elapsed().as_secs_f64());
                    if now.acked > 0 || now.sent > 0 {
                        line.push_str(&format!(
                            "  produce {:>9} msg/s {:>8.2} MB/s",
                            crate::report::fmt_count((now.acked - last.acked) as f64 / dt),
                            (now.acked_bytes - last.acked_bytes) as f64 / dt / 1e6
                        ));
                        if let Some(p99) = shared.ack_latency.take_interval_p99_ms() {
                            line.push_str(&format!("  ack p99 {p99:.3} ms"));
                        }
                    }
                    if now.consumed > 0 {
                        line.push_str(&format!(
                            "  consume {:>9} msg/s {:>8.2} MB/s",
                            crate::report::fmt_count((now.consumed - last.consumed) as f64 / dt),
                            (now.consumed_bytes - last.consumed_bytes) as f64 / dt / 1e6
                        ));
                        if let Some(p99) = shared.e2e_latency.take_interval_p99_ms() {
                            line.push_str(&format!("  e2e p99 {p99:.3} ms"));
                        }
                    }
                    line.push_str(&format!("  errors {}", shared.errors.total()));
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{line}");
                    last = now;
                }
            })
            .ok();
        Progress {
            stop: Some(tx),
            handle,
        }
    }

    pub fn finish(mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Snapshot {
    sent: u64,
    acked: u64,
    acked_bytes: u64,
    consumed: u64,
    consumed_bytes: u64,
}

impl Snapshot {
    fn of(s: &Shared) -> Snapshot {
        Snapshot {
            sent: Shared::get(&s.sent) + Shared::get(&s.warmup_sent),
            acked: Shared::get(&s.acked) + Shared::get(&s.warmup_acked),
            acked_bytes: Shared::get(&s.acked_bytes_all),
            consumed: Shared::get(&s.consumed),
            consumed_bytes: Shared::get(&s.consumed_bytes_all),
        }
    }
}

//! What the clients of one run share: the clock, the open-loop schedule's
//! start, counters, latency recorders and the error log; and the message
//! generator (sizes, keys, payload carrying its send time).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

use crate::config::SizeSpec;
use crate::histogram::LatencyRecorder;

/// A monotonic clock anchored to wall-clock time once per process.
///
/// Latencies are differences of this clock, so they never go negative when
/// the system clock is adjusted; the Unix anchor lets the send time written
/// into a payload be read as (approximately) wall-clock time elsewhere.
pub struct Clock {
    base: Instant,
    base_unix_ns: u64,
}

pub fn clock() -> &'static Clock {
    static CLOCK: OnceLock<Clock> = OnceLock::new();
    CLOCK.get_or_init(|| Clock {
        base: Instant::now(),
        base_unix_ns: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    })
}

impl Clock {
    /// Nanoseconds since the process's clock base.
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    pub fn to_unix_ns(&self, ns: u64) -> u64 {
        self.base_unix_ns + ns
    }

    pub fn unix_now_ns(&self) -> u64 {
        self.to_unix_ns(self.now_ns())
    }
}

/// librdkafka's own log lines (warnings, and everything `-X debug=...` asks
/// for) go to stderr: without this they would vanish into the `log` facade,
/// which this tool does not install.
pub fn client_log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    // Milliseconds on the run's clock, to line the events up with latencies.
    let ms = clock().now_ns() as f64 / 1e6;
    eprintln!("[{ms:10.3} ms] librdkafka {level:?} {fac}: {message}");
}

/// The librdkafka log level to ask for: rdkafka derives one from the `log`
/// facade (Error when no logger is installed), which would drop the lines
/// `-X debug=...` asks for.
pub fn client_log_level(extra: &[(String, String)]) -> RDKafkaLogLevel {
    if extra.iter().any(|(k, _)| k == "debug") {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    }
}

/// A client-wide librdkafka error (e.g. all brokers down). Printed, not
/// counted: whatever it costs shows up as failed deliveries or missing messages.
pub fn client_error(error: KafkaError, reason: &str) {
    eprintln!("librdkafka error: {error}: {reason}");
}

/// Errors by kind ("delivery: MessageTimedOut", "e2e: missing", ...).
/// Every failure goes through here so the summary can account for all of them.
#[derive(Default)]
pub struct ErrorLog {
    by_kind: Mutex<BTreeMap<String, u64>>,
}

impl ErrorLog {
    pub fn record(&self, kind: impl Into<String>, n: u64) {
        if n == 0 {
            return;
        }
        let mut m = self.by_kind.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(kind.into()).or_insert(0) += n;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn total(&self) -> u64 {
        self.by_kind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// State shared by every producer, consumer and the progress printer of one run.
#[derive(Default)]
pub struct Shared {
    /// Clock ns at which the load starts (0 until the clients are ready).
    pub start_ns: AtomicU64,
    /// Clock ns at which the warm-up ends and measurement begins.
    pub warmup_end_ns: AtomicU64,
    /// Set when the run is over (consumers) or must be abandoned (everyone).
    pub stop: AtomicBool,
    /// Set by a client that could not start; the run is abandoned.
    pub setup_failed: AtomicBool,

    /// Next index in the global open-loop schedule (all producers share it).
    pub next_index: AtomicU64,
    /// Measured messages claimed so far (for --messages).
    pub claimed: AtomicU64,

    pub sent: AtomicU64,
    pub send_failed: AtomicU64,
    pub acked: AtomicU64,
    pub acked_bytes: AtomicU64,
    pub delivery_failed: AtomicU64,
    pub last_ack_ns: AtomicU64,
    pub warmup_sent: AtomicU64,
    pub warmup_acked: AtomicU64,
    /// Acked bytes including the warm-up, for the live progress line.
    pub acked_bytes_all: AtomicU64,

    /// Every message consumed (warm-up included): what e2e compares with acks.
    pub consumed: AtomicU64,
    /// Consumed messages that count for throughput (sent after the warm-up).
    pub consumed_measured: AtomicU64,
    pub consumed_measured_bytes: AtomicU64,
    /// Consumed bytes including the warm-up, for the live progress line.
    pub consumed_bytes_all: AtomicU64,
    pub first_consume_ns: AtomicU64,
    pub last_consume_ns: AtomicU64,

    pub ack_latency: LatencyRecorder,
    pub e2e_latency: LatencyRecorder,
    /// Transactional producers: how long each commit (or abort) call took,
    /// the flush of its messages included.
    pub commit_latency: LatencyRecorder,
    pub txn_committed: AtomicU64,
    pub txn_aborted: AtomicU64,
    /// Messages in committed transactions.
    pub txn_committed_messages: AtomicU64,
    pub errors: ErrorLog,
}

impl Shared {
    pub fn warmup_end(&self) -> u64 {
        load(&self.warmup_end_ns)
    }

    /// The run is over for the clients: stopped by the runner, or Ctrl-C.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || crate::interrupt::interrupted()
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        load(counter)
    }

    /// Records the time of a consumed message (first and last, for the window).
    pub fn note_consume(&self, now: u64) {
        let _ =
            self.first_consume_ns
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        self.last_consume_ns.fetch_max(now, Ordering::Relaxed);
    }
}

/// A small fast PRNG (splitmix64): message sizes, keys and payload bytes need
/// speed and repeatability, not cryptographic quality.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, n); n > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        // Multiply-shift: unbiased enough for load generation, no division.
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Produces the keys and values of a producer's messages.
pub struct MessageGen {
    size: SizeSpec,
    keys: Vec<Vec<u8>>,
    /// Random lowercase text longer than the largest message: values are
    /// windows into it at varying offsets, so consecutive messages differ and
    /// compression sees text-like (compressible but not trivial) data.
    template: Vec<u8>,
    value: Vec<u8>,
    rng: Rng,
}

/// Extra template bytes beyond the largest message, the range of offsets.
const TEMPLATE_SLACK: usize = 4096;

impl MessageGen {
    pub fn new(size: SizeSpec, keys: u64, seed: u64) -> MessageGen {
        let mut rng = Rng::new(seed);
        let template = (0..size.max() + TEMPLATE_SLACK)
            .map(|_| b'a' + rng.below(26) as u8)
            .collect();
        MessageGen {
            size,
            keys: (0..keys).map(|k| format!("key-{k}").into_bytes()).collect(),
            template,
            value: Vec::with_capacity(size.max()),
            rng,
        }
    }

    /// The next message; `send_unix_ns` goes into the first 8 bytes (little
    /// endian) when the value has room, for end-to-end latency.
    pub fn next(&mut self, send_unix_ns: u64) -> (Option<&[u8]>, &[u8]) {
        let len = match self.size {
            SizeSpec::Fixed(n) => n,
            SizeSpec::Range(lo, hi) => lo + self.rng.below((hi - lo + 1) as u64) as usize,
        };
        let offset = self.rng.below(TEMPLATE_SLACK as u64) as usize;
        self.value.clear();
        self.value
            .extend_from_slice(&self.template[offset..offset + len]);
        if len >= 8 {
            self.value[..8].copy_from_slice(&send_unix_ns.to_le_bytes());
        }
        let key = if self.keys.is_empty() {
            None
        } else {
            let k = self.rng.below(self.keys.len() as u64) as usize;
            Some(self.keys[k].as_slice())
        };
        (key, &self.value)
    }
}

/// Reads the send time a producer wrote into a value (None if too short).
pub fn send_time_of(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(..8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_sizes_keys_and_timestamp() {
        let mut g = MessageGen::new(SizeSpec::Range(10, 20), 3, 1);
        let mut seen_keys = std::collections::BTreeSet::new();
        let mut sizes = std::collections::BTreeSet::new();
        for i in 0..2000u64 {
            let (k, v) = g.next(i);
            assert!((10..=20).contains(&v.len()));
            assert_eq!(send_time_of(v), Some(i));
            sizes.insert(v.len());
            seen_keys.insert(k.unwrap().to_vec());
        }
        assert_eq!(seen_keys.len(), 3);
        assert_eq!(sizes.len(), 11, "every size in the range occurs");
        let mut g = MessageGen::new(SizeSpec::Fixed(4), 0, 1);
        let (k, v) = g.next(7);
        assert!(k.is_none());
        assert_eq!(v.len(), 4);
        assert_eq!(send_time_of(v), None);
    }

    #[test]
    fn rng_below_is_in_range() {
        let mut r = Rng::new(5);
        for n in [1u64, 2, 7, 1000] {
            for _ in 0..1000 {
                assert!(r.below(n) < n);
            }
        }
    }
}

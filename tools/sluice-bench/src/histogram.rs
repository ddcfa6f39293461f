//! Latency recording: HDR histograms in microseconds, a whole-run histogram
//! for the report and an interval one the live progress line drains each
//! second ("current p99").

use std::sync::Mutex;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest recordable latency: one hour, in µs. Larger values saturate to it
/// (they are a stall either way and still show as the max).
const HIGHEST_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    // 3 significant digits: 0.1% error at every magnitude, the usual HDR choice.
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("static histogram bounds are valid")
}

struct Inner {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

/// Thread-safe latency recorder shared by the clients of one run.
pub struct LatencyRecorder {
    inner: Mutex<Inner>,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            inner: Mutex::new(Inner {
                total: new_histogram(),
                interval: new_histogram(),
            }),
        }
    }
}

impl LatencyRecorder {
    /// Records one latency given in nanoseconds.
    pub fn record_ns(&self, ns: u64) {
        // Sub-microsecond values are recorded as 1 µs (the histogram's floor).
        let us = (ns / 1000).max(1);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.total.saturating_record(us);
        inner.interval.saturating_record(us);
    }

    /// p99 in ms since the previous call (None if nothing was recorded), and resets the interval.
    pub fn take_interval_p99_ms(&self) -> Option<f64> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.interval.is_empty() {
            return None;
        }
        let p99 = inner.interval.value_at_quantile(0.99) as f64 / 1000.0;
        inner.interval.reset();
        Some(p99)
    }

    pub fn percentiles(&self) -> Percentiles {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Percentiles::of(&inner.total)
    }
}

/// The summary of one latency distribution, in milliseconds (µs resolution).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub min_ms: f64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        // HDR quantiles report the highest value equivalent to the bucket;
        // rounding to whole µs keeps the printed ms exact to 3 decimals.
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            count: h.len(),
            min_ms: ms(h.min()),
            mean_ms: h.mean().round() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p99_9_ms: ms(h.value_at_quantile(0.999)),
            p99_99_ms: ms(h.value_at_quantile(0.9999)),
            max_ms: ms(h.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_ordered_and_in_ms() {
        let r = LatencyRecorder::default();
        for i in 1..=10_000u64 {
            r.record_ns(i * 1000); // 1 µs .. 10 ms
        }
        let p = r.percentiles();
        assert_eq!(p.count, 10_000);
        assert!((p.p50_ms - 5.0).abs() < 0.01, "{p:?}");
        assert!((p.p99_ms - 9.9).abs() < 0.01, "{p:?}");
        assert!(p.p50_ms <= p.p90_ms && p.p90_ms <= p.p99_ms && p.p99_ms <= p.p99_9_ms);
        assert!(p.p99_9_ms <= p.p99_99_ms && p.p99_99_ms <= p.max_ms);
        assert!((p.max_ms - 10.0).abs() < 0.01);
        assert!(r.take_interval_p99_ms().is_some());
        assert!(r.take_interval_p99_ms().is_none(), "interval resets");
        assert_eq!(r.percentiles().count, 10_000, "total does not");
    }

    #[test]
    fn stalls_saturate_instead_of_failing() {
        let r = LatencyRecorder::default();
        r.record_ns(u64::MAX);
        r.record_ns(0);
        let p = r.percentiles();
        assert_eq!(p.count, 2);
        assert!(p.max_ms >= 3_600_000.0);
    }
}

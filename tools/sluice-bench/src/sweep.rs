//! Sweep results: the grid table and the choice of the best setting within a
//! p99 budget.

use crate::report::{fmt_count, fmt_ms, table, RunResult};

/// The terminal table: one row per grid point, with the mock baseline's
/// throughput and p99 (and the ratios) when there is one.
pub fn render_table(results: &[RunResult], baseline: &[RunResult]) -> String {
    let kind = results.first().map_or("ack", |r| r.latency_kind());
    let mut headers: Vec<String> = [
        "batch.size",
        "linger.ms",
        "msg B",
        "acks",
        "compr",
        "rate",
        "msgs/s",
        "MB/s",
    ]
    .iter()
    .map(|h| h.to_string())
    .collect();
    for p in ["p50", "p99", "p99.9", "max"] {
        headers.push(format!("{kind} {p} ms"));
    }
    headers.push("errors".into());
    let with_mock = baseline.len() == results.len() && !baseline.is_empty();
    if with_mock {
        for h in ["mock MB/s", "MB/s ratio", "mock p99 ms", "p99 ratio"] {
            headers.push(h.into());
        }
    }
    let rows: Vec<Vec<String>> = results
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let lat = r.latency().cloned().unwrap_or_default();
            let mut row = vec![
                r.batch_bytes.to_string(),
                r.linger_ms.to_string(),
                r.message_bytes.clone(),
                r.acks.clone(),
                r.compression.clone(),
                r.rate_label(),
                fmt_count(r.msgs_per_s()),
                format!("{:.2}", r.mb_per_s()),
                fmt_ms(lat.p50_ms),
                fmt_ms(lat.p99_ms),
                fmt_ms(lat.p99_9_ms),
                fmt_ms(lat.max_ms),
                r.error_count.to_string(),
            ];
            if with_mock {
                let m = &baseline[i];
                let mlat = m.latency().cloned().unwrap_or_default();
                let ratio = |a: f64, b: f64| {
                    if b > 0.0 {
                        format!("{:.2}", a / b)
                    } else {
                        "-".into()
                    }
                };
                row.push(format!("{:.2}", m.mb_per_s()));
                row.push(ratio(r.mb_per_s(), m.mb_per_s()));
                row.push(fmt_ms(mlat.p99_ms));
                row.push(ratio(lat.p99_ms, mlat.p99_ms));
            }
            row
        })
        .collect();
    table(&headers, &rows, 0)
}

/// Throughputs within this fraction of the best count as a tie (at a fixed
/// rate every point reaches the same rate, give or take noise).
const TIE: f64 = 0.01;

/// The error-free point with the highest MB/s whose p99 is within the
/// budget; among points that tie on throughput, the one with the lowest p99.
pub fn best_within(results: &[RunResult], budget_ms: f64) -> Option<&RunResult> {
    let p99 = |r: &RunResult| r.latency().map_or(f64::MAX, |l| l.p99_ms);
    let fits: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.error_count == 0)
        .filter(|r| {
            r.latency()
                .is_some_and(|l| l.count > 0 && l.p99_ms <= budget_ms)
        })
        .collect();
    let top = fits.iter().map(|r| r.mb_per_s()).fold(f64::MIN, f64::max);
    fits.into_iter()
        .filter(|r| r.mb_per_s() >= top * (1.0 - TIE))
        .min_by(|a, b| p99(a).total_cmp(&p99(b)))
}

pub fn describe(r: &RunResult) -> String {
    let lat = r.latency().cloned().unwrap_or_default();
    format!(
        "batch.size={} linger.ms={} acks={} compression={} message={} B rate={}: {:.2} MB/s ({} msgs/s), {} p50 {} ms, p99 {} ms",
        r.batch_bytes,
        r.linger_ms,
        r.acks,
        r.compression,
        r.message_bytes,
        r.rate_label(),
        r.mb_per_s(),
        fmt_count(r.msgs_per_s()),
        r.latency_kind(),
        fmt_ms(lat.p50_ms),
        fmt_ms(lat.p99_ms)
    )
}

/// The closing recommendation.
pub fn render_verdict(results: &[RunResult], budget_ms: Option<f64>) -> String {
    // No budget: the fastest point, ties again broken by the lower p99.
    let fastest = best_within(results, f64::INFINITY);
    match budget_ms {
        Some(b) => match best_within(results, b) {
            Some(r) => format!("Best within p99 <= {b} ms: {}\n", describe(r)),
            None => {
                let lowest = results
                    .iter()
                    .filter(|r| r.latency().is_some_and(|l| l.count > 0))
                    .min_by(|a, b| {
                        let p = |r: &RunResult| r.latency().map_or(f64::MAX, |l| l.p99_ms);
                        p(a).total_cmp(&p(b))
                    });
                match lowest {
                    Some(r) => format!(
                        "No error-free setting has p99 <= {b} ms; the lowest p99 was {}\n",
                        describe(r)
                    ),
                    None => format!("No setting has p99 <= {b} ms\n"),
                }
            }
        },
        None => match fastest {
            Some(r) => format!(
                "Highest throughput (no --p99-budget-ms given): {}\n",
                describe(r)
            ),
            None => "Every point had errors; no recommendation\n".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Percentiles;

    fn point(batch: u64, mb: f64, p99: f64, errors: u64) -> RunResult {
        RunResult {
            broker: "target".into(),
            bootstrap: "x".into(),
            mode: "produce".into(),
            topic: "t".into(),
            partitions: 1,
            producers: 1,
            consumers: 0,
            keys: 0,
            idempotence: false,
            batch_bytes: batch,
            linger_ms: 0,
            message_bytes: "100".into(),
            acks: "all".into(),
            compression: "none".into(),
            rate: 0.0,
            warmup_s: 0.0,
            requested_messages: None,
            requested_duration_s: None,
            produce: Some(crate::report::ProduceStats {
                messages: 1,
                acked: 1,
                failed: 0,
                bytes: 1,
                elapsed_s: 1.0,
                msgs_per_s: mb * 1e4,
                mb_per_s: mb,
                warmup_messages: 0,
            }),
            consume: None,
            ack_latency: Some(Percentiles {
                count: 1,
                p99_ms: p99,
                ..Default::default()
            }),
            e2e_latency: None,
            transactions: None,
            errors: Default::default(),
            error_count: errors,
        }
    }

    #[test]
    fn best_is_fastest_within_budget_then_lowest_p99() {
        let rs = vec![
            point(1, 10.0, 5.0, 0),
            point(2, 50.0, 50.0, 0), // over budget
            point(3, 30.0, 9.0, 0),  // fastest within budget...
            point(4, 30.1, 4.0, 0),  // ...ties with this one, lower p99
            point(5, 90.0, 1.0, 3),  // errors disqualify
        ];
        assert_eq!(best_within(&rs, 10.0).unwrap().batch_bytes, 4);
        assert_eq!(best_within(&rs, 100.0).unwrap().batch_bytes, 2);
        assert!(best_within(&rs, 0.5).is_none());
        assert!(render_verdict(&rs, Some(0.5)).starts_with("No error-free setting"));
    }
}

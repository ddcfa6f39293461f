//! Runs each mode of the sluice-bench binary briefly against a real Sluice
//! broker and checks that its outputs exist and agree with each other:
//! counts add up to what was asked for, percentiles are ordered, a sweep has
//! one row per grid point and a chart with its series, and --baseline-mock
//! reports both brokers and their ratio.
//!
//! The broker is the root package's `sluice` binary from the same target
//! directory: `cargo test --workspace` builds it (the root package's tests
//! need it); for `cargo test -p sluice-bench` alone, build it first with
//! `cargo build -p sluice --bin sluice`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// The raw client sluice-bench copies batches with, used here to check the copy.
#[allow(dead_code)]
#[path = "../src/wire.rs"]
mod wire;

const BENCH: &str = env!("CARGO_BIN_EXE_sluice-bench");

/// target/<profile>/sluice next to the sluice-bench binary. It is not built
/// here: cargo holds the target directory's lock while tests run, so a nested
/// `cargo build` would wait forever.
fn sluice_binary() -> PathBuf {
    let bin = Path::new(BENCH).with_file_name("sluice");
    assert!(
        bin.exists(),
        "no sluice binary at {}: run `cargo test --workspace` (which builds it), \
         or `cargo build -p sluice --bin sluice` first",
        bin.display()
    );
    bin
}

/// A Sluice broker on an ephemeral port and a temporary data dir.
struct Broker {
    child: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(sluice_binary())
            .args(["--listen", "127.0.0.1:0", "--cores", "2", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("sluice starts");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(
                Instant::now() < deadline,
                "broker did not report its address"
            );
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(a) = line.strip_prefix("sluice listening on ") {
                        break a.trim().to_string();
                    }
                }
                other => panic!("broker exited before listening: {other:?}"),
            }
        };
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Broker {
            child,
            addr,
            _dir: dir,
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bench(args: &[&str]) -> Output {
    let out = Command::new(BENCH)
        .args(args)
        // No live progress, whatever the test runner's stderr is.
        .env("CI", "true")
        .output()
        .expect("sluice-bench runs");
    eprintln!(
        "sluice-bench {}\n--- stdout\n{}--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(dir: &Path) -> Value {
    let s = std::fs::read_to_string(dir.join("results.json")).expect("results.json written");
    serde_json::from_str(&s).expect("results.json is JSON")
}

/// results.csv as header + rows of fields (the tool quotes no field here).
fn csv(dir: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let s = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv written");
    let mut lines = s
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>());
    let header = lines.next().expect("csv header");
    let rows: Vec<Vec<String>> = lines.collect();
    for r in &rows {
        assert_eq!(r.len(), header.len(), "csv row has every column");
    }
    (header, rows)
}

fn col<'a>(header: &[String], row: &'a [String], name: &str) -> &'a str {
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("csv column {name}"));
    &row[i]
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a count, got {v}"))
}

fn assert_ordered(p: &Value) {
    let keys = [
        "min_ms",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "p99_9_ms",
        "p99_99_ms",
        "max_ms",
    ];
    let vals: Vec<f64> = keys.iter().map(|k| p[k].as_f64().expect(k)).collect();
    for w in vals.windows(2) {
        assert!(w[0] <= w[1], "percentiles out of order: {p}");
    }
    assert!(vals[0] >= 0.0);
}

#[test]
fn produce_consume_and_e2e_counts_add_up() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let d = out.path();

    // produce: two producers, keys, a size range.
    let pdir = d.join("produce");
    let o = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-a",
        "--partitions",
        "3",
        "--messages",
        "3000",
        "--producers",
        "2",
        "--keys",
        "10",
        "--message-bytes",
        "50-150",
        "--linger-ms",
        "2",
        "--out",
        pdir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "produce exits 0");
    assert!(stdout(&o).contains("produced"));
    let j = json(&pdir);
    let r = &j["results"][0];
    assert_eq!(r["mode"], "produce");
    assert_eq!(u(&r["produce"]["messages"]), 3000);
    assert_eq!(u(&r["produce"]["acked"]), 3000);
    assert_eq!(u(&r["produce"]["failed"]), 0);
    assert_eq!(u(&r["ack_latency"]["count"]), 3000);
    let bytes = u(&r["produce"]["bytes"]);
    // Values of 50..=150 bytes plus keys "key-0".."key-9" (5 bytes).
    assert!((3000 * 55..=3000 * 155).contains(&bytes), "bytes {bytes}");
    assert_ordered(&r["ack_latency"]);
    assert_eq!(u(&j["total_errors"]), 0);
    let (h, rows) = csv(&pdir);
    assert_eq!(rows.len(), 1);
    assert_eq!(col(&h, &rows[0], "acked"), "3000");
    assert_eq!(col(&h, &rows[0], "partitions"), "3");

    // consume: reads back exactly what was produced, from the beginning.
    let cdir = d.join("consume");
    let o = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-a",
        "--consumers",
        "2",
        "--out",
        cdir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "consume exits 0");
    let j = json(&cdir);
    let c = &j["results"][0]["consume"];
    assert_eq!(u(&c["messages"]), 3000);
    assert_eq!(u(&c["expected"]), 3000);
    assert_eq!(u(&c["missing"]), 0);
    assert_eq!(u(&c["bytes"]), bytes, "the same bytes come back");

    // e2e at a fixed rate with a warm-up and an idempotent producer: every
    // acked message is consumed, and the measured ones all have an
    // end-to-end latency.
    let edir = d.join("e2e");
    let o = bench(&[
        "e2e",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-b",
        "--idempotence",
        "--messages",
        "2000",
        "--rate",
        "4000",
        "--warmup-s",
        "0.25",
        "--linger-ms",
        "1",
        "--out",
        edir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "e2e exits 0");
    assert!(stdout(&o).contains("end-to-end"));
    let j = json(&edir);
    let r = &j["results"][0];
    let p = &r["produce"];
    assert_eq!(u(&p["messages"]), 2000);
    assert_eq!(u(&p["acked"]), 2000);
    assert!(u(&p["warmup_messages"]) > 0, "the warm-up sent messages");
    let c = &r["consume"];
    assert_eq!(u(&c["total_consumed"]), 2000 + u(&p["warmup_messages"]));
    assert_eq!(u(&c["messages"]), 2000);
    assert_eq!(u(&r["e2e_latency"]["count"]), 2000);
    assert_ordered(&r["e2e_latency"]);
    assert_ordered(&r["ack_latency"]);
    // Open loop at 4000/s: 2000 messages take about half a second.
    let rate = p["msgs_per_s"].as_f64().unwrap();
    assert!((2000.0..=6000.0).contains(&rate), "rate {rate}");
}

/// Transactional producers: every transaction ends (committed or aborted as
/// drawn), each end is timed, and a read_committed consumer reads exactly the
/// committed messages: one more is never there.
#[test]
fn transactional_produce_commits_aborts_and_reads_committed() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let pdir = out.path().join("txn");
    let o = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-txn",
        "--partitions",
        "3",
        "--messages",
        "500",
        "--transactional",
        "50",
        "--abort-percent",
        "50",
        "--linger-ms",
        "1",
        "--out",
        pdir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "transactional produce exits 0");
    assert!(stdout(&o).contains("transactions of 50 messages"));
    let j = json(&pdir);
    let r = &j["results"][0];
    assert_eq!(
        u(&r["produce"]["acked"]),
        500,
        "aborted ones are written too"
    );
    let t = &r["transactions"];
    let (committed, aborted) = (u(&t["committed"]), u(&t["aborted"]));
    assert_eq!(
        committed + aborted,
        10,
        "500 messages in transactions of 50"
    );
    assert!(committed > 0 && aborted > 0, "{t}");
    assert_eq!(u(&t["committed_messages"]), 50 * committed);
    assert_eq!(u(&t["commit_latency"]["count"]), 10);
    assert_ordered(&t["commit_latency"]);
    assert_eq!(u(&j["total_errors"]), 0);

    let read = |messages: u64, name: &str| {
        let dir = out.path().join(name);
        let o = bench(&[
            "consume",
            "--bootstrap",
            &broker.addr,
            "--topic",
            "bench-txn",
            "--messages",
            &messages.to_string(),
            "--timeout-s",
            "2",
            "-X",
            "isolation.level=read_committed",
            "--out",
            dir.to_str().unwrap(),
        ]);
        (o.status.success(), json(&dir))
    };
    let (ok, j) = read(50 * committed, "committed");
    assert!(ok, "read_committed reads every committed message");
    assert_eq!(u(&j["results"][0]["consume"]["messages"]), 50 * committed);
    let (ok, j) = read(50 * committed + 1, "one-more");
    assert!(!ok, "an aborted message is not read");
    assert_eq!(u(&j["results"][0]["consume"]["missing"]), 1);
}

#[test]
fn sweep_writes_one_row_per_point_and_a_chart() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let d = out.path();
    let o = bench(&[
        "sweep",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-sweep",
        "--batch-bytes",
        "1024,65536",
        "--linger-ms",
        "0,5",
        "--messages",
        "400",
        "--p99-budget-ms",
        "10000",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "sweep exits 0");
    let text = stdout(&o);
    assert!(text.contains("batch.size"), "table printed");
    assert!(
        text.contains("Best within p99 <= 10000 ms"),
        "verdict printed"
    );

    let (h, rows) = csv(d);
    assert_eq!(rows.len(), 4, "one row per grid point");
    let mut points: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                col(&h, r, "batch_bytes").to_string(),
                col(&h, r, "linger_ms").to_string(),
            )
        })
        .collect();
    points.sort();
    assert_eq!(
        points,
        [("1024", "0"), ("1024", "5"), ("65536", "0"), ("65536", "5")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    for r in &rows {
        assert_eq!(col(&h, r, "acked"), "400");
        assert_eq!(col(&h, r, "errors"), "0");
    }
    let j = json(d);
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 4);
    for r in results {
        assert_eq!(u(&r["produce"]["acked"]), 400);
        assert_ordered(&r["ack_latency"]);
    }
    assert!(
        j["best_within_budget"].is_object(),
        "a setting fits a 10 s budget"
    );

    let svg = std::fs::read_to_string(d.join("chart.svg")).expect("chart.svg written");
    assert!(svg.trim_start().starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for series in [
        "linger=0ms acks=all msg=100B",
        "linger=5ms acks=all msg=100B",
    ] {
        assert!(svg.contains(series), "legend names series {series}");
    }
    assert!(svg.contains("p99 budget"));
    // Two panels x two series: at least four polylines.
    assert!(svg.matches("<polyline").count() >= 4);
}

#[test]
fn baseline_mock_reports_both_and_the_ratio() {
    let broker = Broker::start();
    let out = tempfile::tempdir().unwrap();
    let d = out.path();
    let o = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-mock",
        "--messages",
        "1000",
        "--baseline-mock",
        "1",
        "--out",
        d.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "exits 0");
    let text = stdout(&o);
    assert!(text.contains("against target"));
    assert!(text.contains("against mock"));
    assert!(text.contains("target/mock"));
    let j = json(d);
    assert_eq!(u(&j["results"][0]["produce"]["acked"]), 1000);
    assert_eq!(u(&j["baseline_mock"][0]["produce"]["acked"]), 1000);
    let ratios = j["ratios"][0].as_array().expect("ratios");
    let thr = ratios
        .iter()
        .find(|r| r["metric"] == "produce msgs/s")
        .expect("throughput ratio");
    let (t, m, ratio) = (
        thr["target"].as_f64().unwrap(),
        thr["mock"].as_f64().unwrap(),
        thr["ratio"].as_f64().unwrap(),
    );
    assert!((ratio - t / m).abs() < 1e-9);
    let (h, rows) = csv(d);
    let brokers: Vec<&str> = rows.iter().map(|r| col(&h, r, "broker")).collect();
    assert_eq!(brokers, ["target", "mock"]);

    // consume: the start of the target's topic is copied batch for batch into
    // a new topic on the target and on the (empty) mock, and both read it all.
    let cdir = d.join("consume");
    let o = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-mock",
        "--baseline-mock",
        "1",
        "--keep-copy",
        "--out",
        cdir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "exits 0");
    let j = json(&cdir);
    assert_eq!(u(&j["results"][0]["consume"]["messages"]), 1000);
    assert_eq!(u(&j["baseline_mock"][0]["consume"]["messages"]), 1000);
    assert!(j["ratios"][0]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["metric"] == "consume MB/s"));
    let stderr = String::from_utf8_lossy(&o.stderr);
    let copy_topic = stderr
        .lines()
        .find(|l| l.contains("both brokers hold the same"))
        .and_then(|l| l.split_whitespace().last())
        .expect("the copy is reported")
        .to_string();
    assert!(copy_topic.starts_with("bench-mock-same-"), "{copy_topic}");
    // The copy on the target holds the original's batches, byte for byte
    // (offsets included: both start at 0).
    let mut conn = wire::Conn::connect(&broker.addr, "modes-test").unwrap();
    let mut batches_seen = 0;
    for partition in 0..j["results"][0]["partitions"].as_u64().unwrap_or(1) as i32 {
        let original = conn
            .fetch("bench-mock", partition, 0, 1 << 20)
            .unwrap()
            .records
            .to_vec();
        let copied = conn
            .fetch(&copy_topic, partition, 0, 1 << 20)
            .unwrap()
            .records
            .to_vec();
        assert_eq!(original, copied, "partition {partition}: copy differs");
        batches_seen += wire::batches(&copied).unwrap().len();
    }
    assert!(batches_seen > 0);

    // Without --keep-copy the copy is deleted after the run: only the kept one remains.
    let o = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-mock",
        "--baseline-mock",
        "1",
    ]);
    assert!(o.status.success(), "exits 0");
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .create()
        .unwrap();
    let md = rdkafka::consumer::Consumer::fetch_metadata(&consumer, None, Duration::from_secs(10))
        .unwrap();
    let copies: Vec<&str> = md
        .topics()
        .iter()
        .map(|t| t.name())
        .filter(|n| n.starts_with("bench-mock-same-"))
        .collect();
    assert_eq!(copies, [copy_topic.as_str()]);
}

#[test]
fn errors_give_a_nonzero_exit() {
    // Nothing listens on port 1: the tool cannot start (exit 2), quickly.
    let o = bench(&[
        "produce",
        "--bootstrap",
        "127.0.0.1:1",
        "--messages",
        "10",
        "--timeout-s",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach"));

    // Asking to consume more than the topic holds: counted, exit 1.
    let broker = Broker::start();
    let o = bench(&[
        "produce",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-short",
        "--messages",
        "100",
    ]);
    assert!(o.status.success());
    let out = tempfile::tempdir().unwrap();
    let o = bench(&[
        "consume",
        "--bootstrap",
        &broker.addr,
        "--topic",
        "bench-short",
        "--messages",
        "150",
        "--timeout-s",
        "1",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let j = json(out.path());
    let c = &j["results"][0]["consume"];
    assert_eq!(u(&c["messages"]), 100);
    assert_eq!(u(&c["missing"]), 50);
    assert_eq!(u(&j["total_errors"]), 50);
}

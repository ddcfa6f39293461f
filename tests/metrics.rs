//! The `/metrics` endpoint: off by default; with `--metrics-listen` it serves
//! the Prometheus text format, and after real librdkafka traffic the numbers
//! agree with that traffic (request counts, bytes, log end offsets, group
//! commit rounds).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

use common::wire::{create_topic, Conn};
use common::{http_get as get, topic, TestBroker};

const MESSAGES: usize = 2000;
const VALUE_BYTES: usize = 500;

/// Every sample of the exposition as (name{labels}, value), checking the
/// format line by line on the way.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series and value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name_end = series.find('{').unwrap_or(series.len());
        assert!(
            series[..name_end]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name: {line}"
        );
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series}"))
}

/// Checks a histogram series: buckets cumulative, +Inf equal to the count.
fn check_histogram(samples: &HashMap<String, f64>, name: &str, labels: &str) -> f64 {
    let count = value(samples, &format!("{name}_count{{{labels}}}"));
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix(&format!("{name}_bucket{{{labels},le=\""))?;
            let le = rest.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    assert!(buckets.len() > 5, "{name}{{{labels}}} has buckets");
    for pair in buckets.windows(2) {
        assert!(pair[0].1 <= pair[1].1, "{name}{{{labels}}} cumulative");
    }
    assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
    count
}

#[test]
fn metrics_are_off_by_default() {
    let broker = TestBroker::start();
    assert!(broker.metrics_url.is_none());
}

#[test]
fn metrics_follow_real_traffic() {
    let broker = TestBroker::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let url = broker.metrics_url.clone().expect("metrics address printed");
    let name = topic("metrics");
    create_topic(&mut Conn::open(&broker.addr), &name, 2, &[]);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let payload_bytes = vec![b'm'; VALUE_BYTES];
    for i in 0..MESSAGES {
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to(&name).key(&key).payload(&payload_bytes))
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", "metrics-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..2 {
        assignment
            .add_partition_offset(&name, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut consumed = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while consumed < MESSAGES {
        assert!(
            Instant::now() < deadline,
            "consumed {consumed} of {MESSAGES}"
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            assert_eq!(message.unwrap().payload().unwrap().len(), VALUE_BYTES);
            consumed += 1;
        }
    }

    let (status, body) = get(&url, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let samples = parse(&body);

    let produces = value(&samples, "sluice_requests_total{api=\"Produce\"}");
    let fetches = value(&samples, "sluice_requests_total{api=\"Fetch\"}");
    assert!(
        produces >= 1.0 && fetches >= 1.0,
        "{produces} produces, {fetches} fetches"
    );
    assert!(value(&samples, "sluice_requests_total{api=\"Metadata\"}") >= 1.0);
    assert_eq!(
        check_histogram(
            &samples,
            "sluice_request_duration_seconds",
            "api=\"Produce\""
        ),
        produces
    );
    assert_eq!(
        check_histogram(&samples, "sluice_request_duration_seconds", "api=\"Fetch\""),
        fetches
    );

    // Bytes: every value went in once and out at least once.
    let payload = (MESSAGES * VALUE_BYTES) as f64;
    let bytes = |direction: &str| -> f64 {
        (0..2)
            .map(|s| {
                value(
                    &samples,
                    &format!(
                        "sluice_network_bytes_total{{shard=\"{s}\",direction=\"{direction}\"}}"
                    ),
                )
            })
            .sum()
    };
    assert!(
        bytes("in") > payload,
        "bytes in {} for {payload}",
        bytes("in")
    );
    assert!(
        bytes("out") > payload,
        "bytes out {} for {payload}",
        bytes("out")
    );

    // Partitions: log end offsets add up to what was produced.
    let end: f64 = (0..2)
        .map(|p| {
            value(
                &samples,
                &format!("sluice_partition_log_end_offset{{topic=\"{name}\",partition=\"{p}\"}}"),
            )
        })
        .sum();
    assert_eq!(end, MESSAGES as f64);
    for p in 0..2 {
        let size = value(
            &samples,
            &format!("sluice_partition_size_bytes{{topic=\"{name}\",partition=\"{p}\"}}"),
        );
        assert!(size > 0.0);
        assert_eq!(
            value(
                &samples,
                &format!("sluice_partition_log_start_offset{{topic=\"{name}\",partition=\"{p}\"}}")
            ),
            0.0
        );
    }

    // Group commit: acks=all appends were synced in rounds.
    let mut rounds = 0.0;
    for s in 0..2 {
        let labels = format!("shard=\"{s}\"");
        let batches = check_histogram(&samples, "sluice_group_commit_batch_appends", &labels);
        let syncs = check_histogram(&samples, "sluice_group_commit_sync_seconds", &labels);
        assert_eq!(batches, syncs, "one batch size and one latency per round");
        rounds += batches;
        assert!(
            value(
                &samples,
                &format!("sluice_shard_busy_seconds_total{{{labels}}}")
            ) > 0.0
        );
        assert!(value(&samples, &format!("sluice_shard_queue_depth{{{labels}}}")) >= 0.0);
    }
    assert!(rounds >= 1.0);
    let appends: f64 = (0..2)
        .map(|s| {
            value(
                &samples,
                &format!("sluice_group_commit_batch_appends_sum{{shard=\"{s}\"}}"),
            )
        })
        .sum();
    assert!(
        appends >= produces.min(1.0) && appends <= produces * 2.0,
        "{appends} appends covered for {produces} produce requests over 2 partitions"
    );
    // The consumer and producer are still connected.
    let connections: f64 = (0..2)
        .map(|s| value(&samples, &format!("sluice_connections{{shard=\"{s}\"}}")))
        .sum();
    assert!(connections >= 2.0, "{connections} connections");
    let pooled = value(&samples, "sluice_read_buffer_pool_bytes");
    assert!(
        (0.0..=(64 << 20) as f64).contains(&pooled),
        "{pooled} bytes of pooled read buffers"
    );

    // Anything else is refused.
    assert_eq!(get(&url, "GET", "/").0, "HTTP/1.1 404 Not Found");
    assert_eq!(
        get(&url, "POST", "/metrics").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    drop(consumer);
    drop(producer);
}

#[test]
fn a_client_trickling_its_request_does_not_hold_the_endpoint() {
    let broker = TestBroker::start_with(&["--metrics-listen", "127.0.0.1:0"]);
    let url = broker.metrics_url.clone().expect("metrics address printed");
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    // A client that sends half a request head and then a byte a second.
    let trickler = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&addr).unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        for _ in 0..20 {
            std::thread::sleep(Duration::from_secs(1));
            if stream.write_all(b"X").is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let (status, body) = get(&url, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("sluice_requests_total"));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a scrape waited {:?} behind a trickling client",
        started.elapsed()
    );
    trickler.join().unwrap();
}

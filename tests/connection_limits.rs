//! Connections that misbehave must not stall a shard or grow memory without
//! bound: thousands of idle connections, a consumer that never reads its
//! socket, and clients that vanish in the middle of a request.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::records::Compression;
use sluice::protocol::encode;

use common::wire::*;
use common::TestBroker;

/// The broker's resident memory in KiB (from /proc).
fn rss_kib(addr_pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{addr_pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Raises this test process's descriptor limit so that it can open many sockets.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    hard
}

fn batch(bytes: usize) -> Bytes {
    let value = Bytes::from(vec![b'v'; bytes]);
    encode::encode_batch(
        &[encode::record(
            0,
            1_700_000_000_000,
            None,
            Some(value),
            None,
        )],
        Compression::None,
    )
}

#[test]
fn idle_connections_slow_readers_and_vanishing_clients_do_not_hurt_others() {
    let idle_target = raise_fd_limit().min(4096).saturating_sub(200) as usize;
    let broker = TestBroker::start();
    let pid = broker.pid().expect("running broker");
    let mut conn = Conn::open(&broker.addr);
    let topic = common::topic("limits");
    create_topic(&mut conn, &topic, 2, &[]);
    for _ in 0..64 {
        assert_eq!(
            produce(&mut conn, &topic, 0, batch(16 * 1024)).error_code,
            NONE
        );
    }
    let rss_before = rss_kib(pid);

    // Thousands of idle connections, some of them with half a request sent.
    let mut idle = Vec::with_capacity(idle_target);
    for i in 0..idle_target {
        let mut stream = TcpStream::connect(&broker.addr).expect("connect");
        if i % 10 == 0 {
            stream.write_all(&[0, 0, 1, 0, 0, 3]).unwrap(); // a length prefix and 2 bytes of a frame
        }
        idle.push(stream);
    }

    // Slow consumers: pipeline many large fetches and never read the answers.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(&broker.addr).unwrap();
        for _ in 0..200 {
            let request = sessionless(
                12,
                &topic,
                uuid::Uuid::nil(),
                &[(0, 0, 1 << 20)],
                0,
                0,
                50 << 20,
            );
            stream
                .write_all(&Conn::frame_with(ApiKey::Fetch, 12, 1, &request))
                .unwrap();
        }
        slow.push(stream);
    }

    // Clients that vanish mid-request (a produce cut short, then closed).
    for _ in 0..50 {
        let mut stream = TcpStream::connect(&broker.addr).unwrap();
        let request = produce_request(&topic, 1, batch(1000));
        let frame = Conn::frame_with(ApiKey::Produce, 9, 7, &request);
        stream.write_all(&frame[..frame.len() / 2]).unwrap();
    }

    // Everyone else is served promptly meanwhile.
    let started = std::time::Instant::now();
    let mut other = Conn::open(&broker.addr);
    for i in 0..20 {
        let response = produce(&mut other, &topic, 1, batch(100));
        assert_eq!((response.error_code, response.base_offset), (NONE, i));
    }
    let response = fetch(
        &mut other,
        12,
        &sessionless(
            12,
            &topic,
            uuid::Uuid::nil(),
            &[(1, 0, 1 << 20)],
            0,
            1,
            1 << 20,
        ),
    );
    assert_eq!(response.responses[0].partitions[0].high_watermark, 20);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "served in {:?}",
        started.elapsed()
    );

    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);
    // 8 slow readers each asked for 200 x ~1 MiB: holding those would be 1.6 GB.
    // One fetch per connection at a time, and small read buffers for idle ones,
    // keep the growth to tens of MiB.
    let growth_mib = rss_after.saturating_sub(rss_before) / 1024;
    eprintln!(
        "{} idle connections, 8 stalled readers: broker RSS {rss_before} KiB -> {rss_after} KiB",
        idle.len()
    );
    assert!(growth_mib < 256, "resident memory grew by {growth_mib} MiB");

    // The stalled readers still get correct answers once they read.
    let mut first = [0u8; 8];
    slow[0]
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow[0].read_exact(&mut first).unwrap();
    assert_eq!(
        i32::from_be_bytes(first[4..8].try_into().unwrap()),
        1,
        "correlation id of the first fetch"
    );
}

/// The value of one series in a Prometheus exposition.
fn metric(body: &str, series: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series}"))
}

#[test]
fn many_producers_together_stay_within_the_shard_budget() {
    const BUDGET: usize = 16 << 20;
    const FRAME: usize = 2 << 20;
    let broker = TestBroker::start_with(&[
        "--shard-max-request-bytes",
        &BUDGET.to_string(),
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let topic = common::topic("budget");
    let mut admin = Conn::open(&broker.addr);
    create_topic(&mut admin, &topic, 2, &[("max.message.bytes", "4194304")]);
    // 8 connections each pipelining 20 acks=all requests of 2 MiB: 320 MiB
    // offered at once, 20 times the budget.
    let records = batch(FRAME);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let addr = broker.addr.clone();
            let topic = topic.clone();
            let records = records.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                conn.stream
                    .set_read_timeout(Some(Duration::from_secs(60)))
                    .unwrap();
                let request = produce_request(&topic, c % 2, records);
                let ids: Vec<i32> = (0..20)
                    .map(|_| conn.send(ApiKey::Produce, 9, &request))
                    .collect();
                for id in ids {
                    let response: kafka_protocol::messages::ProduceResponse =
                        conn.recv(ApiKey::Produce, 9, id);
                    let p = &response.responses[0].partition_responses[0];
                    assert_eq!(p.error_code, NONE, "produce {id}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let url = broker.metrics_url.clone().unwrap();
    let (status, body) = common::http_get(&url, "GET", "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    let mut busiest = 0.0f64;
    for shard in 0..2 {
        let max = metric(
            &body,
            &format!("sluice_shard_request_bytes_in_flight_max{{shard=\"{shard}\"}}"),
        );
        // One frame may go over (admitted whole when the rest fits).
        assert!(
            max <= (BUDGET + FRAME + 4096) as f64,
            "shard {shard} held {max} request bytes, budget {BUDGET}"
        );
        busiest = busiest.max(max);
        let now = metric(
            &body,
            &format!("sluice_shard_request_bytes_in_flight{{shard=\"{shard}\"}}"),
        );
        assert!(
            now < (64 << 10) as f64,
            "shard {shard} still holds {now} bytes"
        );
    }
    assert!(
        busiest >= (BUDGET / 2) as f64,
        "the load did press on the budget (at most {busiest} bytes held)"
    );
}

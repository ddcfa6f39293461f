//! The fault-injection suite of issue 15, in the manner of Jepsen's Kafka
//! workload: three brokers on loopback (each quorum link through its own
//! proxy, so that links can be cut), a replicated topic (three replicas,
//! min.insync.replicas=2), librdkafka producers (idempotent, acks=all) that
//! write without pause to every partition while a fault is injected, and a
//! consumer that reads meanwhile. Afterwards the history of what clients
//! were told is checked (`common::cluster::check_history`), and each anomaly
//! is named:
//! - `lost`: acknowledged, never read back;
//! - `duplicated`: read more than once;
//! - `divergent`: read at another offset than acknowledged, or replicas whose
//!   logs differ once healed;
//! - `gap`: a partition's offsets not contiguous;
//! - `never sent`: read, but no producer sent it;
//! - `read then lost`: a consumer saw a record during the fault that the
//!   final log does not hold there (it read past the high watermark).
//!
//! Faults: kill -9 of the broker leading most partitions; SIGSTOP of it for
//! longer than the session timeout, then SIGCONT; two of three brokers down
//! (nothing may be acknowledged); the active controller cut off from the
//! other voters (a new one is elected; all converge once healed); a rolling
//! restart (SIGTERM, one broker at a time) that must fail no request;
//! partitions moved off the busiest leader as it is killed (-9), and moved
//! back onto it while it is down (the moves wait, and complete once it
//! returns and catches up); the busiest leader's disk pulled (its
//! partition directories vanish: its replicas go offline, leave the ISRs
//! and hand over their leads while it stays live; restarted on an empty
//! disk, it fetches everything back); the busiest leader cut from its
//! clients and followers (its advertised listener is a proxy) while its
//! quorum links stand (it keeps leading, shrinks its ISRs to itself, and
//! regrows them once healed). Each failover's unavailability window (fault
//! to the first acknowledgement on every partition) is reported.
//!
//! `cargo test --release --test faults` runs each scenario once, briefly (CI).
//! `SLUICE_FAULT_ROUNDS=N` repeats each N times with a longer load (by hand;
//! results in BENCHMARKS.md).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::proxy::Proxy;
use common::TestBroker;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;
const SESSION_MS: u64 = 2000;

/// One scenario at a time: each starts three brokers on two cores, and
/// their timings are what is measured.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn rounds() -> usize {
    std::env::var("SLUICE_FAULT_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Three brokers whose quorum links each go through a proxy: broker i
/// reaches voter j at `links[(i, j)]`.
struct Cluster {
    brokers: Vec<(i32, TestBroker)>,
    links: BTreeMap<(i32, i32), Proxy>,
    /// With data proxies: each broker's advertised listener, a proxy in
    /// front of its Kafka listener (what clients and the other brokers'
    /// replica fetchers reach it through).
    data: BTreeMap<i32, Proxy>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        Cluster::start_with(false)
    }

    /// `data_proxies`: every broker advertises a proxy in front of its
    /// Kafka listener, so that its data links can be cut apart from its
    /// quorum links.
    fn start_with(data_proxies: bool) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut data_bound: BTreeMap<i32, common::proxy::Bound> = if data_proxies {
            (1..=3).map(|id| (id, Proxy::bind())).collect()
        } else {
            BTreeMap::new()
        };
        // The proxies' ports first: a port picked for a broker afterwards
        // cannot be one of theirs.
        let bound: Vec<((i32, i32), common::proxy::Bound)> = (1..=3)
            .flat_map(|i| (1..=3).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|link| (link, Proxy::bind()))
            .collect();
        // Held together while picked, so that the three differ.
        let held: Vec<std::net::TcpListener> = (1..=3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: BTreeMap<i32, u16> = (1..=3)
            .zip(held.iter().map(|l| l.local_addr().unwrap().port()))
            .collect();
        drop(held);
        let links: BTreeMap<(i32, i32), Proxy> = bound
            .into_iter()
            .map(|((i, j), b)| ((i, j), b.forward_to(format!("127.0.0.1:{}", ports[&j]))))
            .collect();
        let brokers = (1..=3)
            .map(|id: i32| {
                let voters = (1..=3)
                    .map(|j| {
                        let addr = if j == id {
                            format!("127.0.0.1:{}", ports[&j])
                        } else {
                            links[&(id, j)].addr()
                        };
                        format!("{j}@{addr}")
                    })
                    .collect::<Vec<_>>()
                    .join(",");
                let args = [
                    "--node-id".to_string(),
                    id.to_string(),
                    "--controller-listen".to_string(),
                    format!("127.0.0.1:{}", ports[&id]),
                    "--controller-quorum-voters".to_string(),
                    voters,
                    "--controller-quorum-election-timeout-ms".to_string(),
                    "300".to_string(),
                    "--broker-heartbeat-interval-ms".to_string(),
                    "200".to_string(),
                    "--broker-session-timeout-ms".to_string(),
                    SESSION_MS.to_string(),
                    "--replica-lag-time-max-ms".to_string(),
                    "2000".to_string(),
                    "--default-replication-factor".to_string(),
                    "3".to_string(),
                ];
                let advertised = data_bound
                    .get(&id)
                    .map(|b| ["--advertised-listener".to_string(), b.addr()]);
                let args: Vec<&str> = args
                    .iter()
                    .chain(advertised.iter().flatten())
                    .map(String::as_str)
                    .collect();
                (
                    id,
                    TestBroker::start_in(&dir.path().join(format!("node-{id}")), &args),
                )
            })
            .collect::<Vec<_>>();
        // Each broker's own address is known once it listens (and stays the
        // same across restarts at the same address).
        let data: BTreeMap<i32, Proxy> = brokers
            .iter()
            .filter_map(|(id, b)| Some((*id, data_bound.remove(id)?.forward_to(b.addr.clone()))))
            .collect();
        let controller = agreed_leader(&view(&brokers), Duration::from_secs(20));
        let everyone: Vec<(i32, i32)> = brokers
            .iter()
            .map(|(id, b)| (*id, data.get(id).map_or(port_of(b), |p| i32::from(p.port))))
            .collect();
        wait_for_brokers(
            &brokers.iter().map(|(_, b)| b).collect::<Vec<_>>(),
            &everyone,
            controller,
        );
        Cluster {
            brokers,
            links,
            data,
            _dir: dir,
        }
    }

    /// Cuts broker `id`'s data links: its advertised listener refuses
    /// clients and the other brokers' replica fetchers.
    fn cut_data(&self, id: i32) {
        self.data[&id].cut();
    }

    fn heal_data(&self, id: i32) {
        self.data[&id].heal();
    }

    fn broker(&mut self, id: i32) -> &mut TestBroker {
        &mut self.brokers.iter_mut().find(|(i, _)| *i == id).unwrap().1
    }

    fn servers(&self) -> String {
        self.brokers
            .iter()
            .map(|(_, b)| b.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Cuts every quorum link to and from broker `id`.
    fn isolate(&self, id: i32) {
        for ((from, to), proxy) in &self.links {
            if *from == id || *to == id {
                proxy.cut();
            }
        }
    }

    fn heal(&self) {
        for proxy in self.links.values() {
            proxy.heal();
        }
    }

    /// The broker leading most partitions of `topic`, as broker `ask` sees it.
    fn busiest_leader(&self, ask: i32, topic: &str) -> i32 {
        let leaders = leaders(&addr_of(&self.brokers, ask), topic).expect("every partition led");
        let mut count: BTreeMap<i32, usize> = BTreeMap::new();
        for (leader, _) in leaders {
            *count.entry(leader).or_default() += 1;
        }
        count.into_iter().max_by_key(|(_, n)| *n).unwrap().0
    }

    /// Sends `signal` (libc's SIGSTOP, SIGCONT) to broker `id`'s process
    /// (no `kill` binary needed: a fresh machine may lack procps).
    fn signal(&mut self, id: i32, signal: libc::c_int) {
        let pid = self.broker(id).pid().expect("running") as libc::pid_t;
        // SAFETY: kill(2) takes plain integers and touches no memory of ours;
        // the pid is our own child's, still running (not yet waited for).
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            sent,
            0,
            "kill({pid}, {signal}): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// What the producers were told, and when.
#[derive(Default)]
struct History {
    /// (partition, offset, value, when acknowledged).
    acked: Vec<(i32, i64, String, Instant)>,
    /// (value, when it failed).
    failed: Vec<(String, Instant)>,
}

/// Producers writing without pause to every partition until stopped: one
/// task per partition, each sending its next record once the last is
/// answered (a fault shows as the gap between answers).
struct Load {
    history: Arc<Mutex<History>>,
    seen: Arc<Mutex<Vec<(i32, i64, String)>>>,
    stop: Arc<AtomicBool>,
    /// The consumer's: set once it read what was acknowledged.
    stop_reading: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(servers: &str, topic: &str) -> Load {
        let history = Arc::new(Mutex::new(History::default()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_reading = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        {
            let (servers, topic, history, stop) = (
                servers.to_string(),
                topic.to_string(),
                history.clone(),
                stop.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let producer: FutureProducer = ClientConfig::new()
                    .set("bootstrap.servers", &servers)
                    .set("acks", "all")
                    .set("enable.idempotence", "true")
                    .set("message.timeout.ms", "15000")
                    // A request to a paused broker is given up (and sent
                    // again, idempotently, to the new leader) after this
                    // rather than librdkafka's default 30 s: the window
                    // measured is the brokers', not the client's patience.
                    .set("request.timeout.ms", "3000")
                    .set("linger.ms", "0")
                    .create()
                    .expect("producer");
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let tasks = (0..PARTITIONS).map(|p| {
                        let (producer, topic, history, stop) = (&producer, &topic, &history, &stop);
                        async move {
                            let mut n = 0u64;
                            while !stop.load(Ordering::Acquire) {
                                let value = format!("p{p}-{n}");
                                n += 1;
                                let sent = producer
                                    .send(
                                        FutureRecord::to(topic)
                                            .partition(p)
                                            .key("k")
                                            .payload(&value),
                                        Duration::from_secs(15),
                                    )
                                    .await;
                                let now = Instant::now();
                                {
                                    let mut history = history.lock().unwrap();
                                    match sent {
                                        Ok(d) => {
                                            history.acked.push((d.partition, d.offset, value, now))
                                        }
                                        Err(_) => history.failed.push((value, now)),
                                    }
                                }
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                        }
                    });
                    futures_util::future::join_all(tasks).await;
                });
            }));
        }
        {
            let (servers, topic, seen, stop) = (
                servers.to_string(),
                topic.to_string(),
                seen.clone(),
                stop_reading.clone(),
            );
            threads.push(std::thread::spawn(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &servers)
                    .set("group.id", "faults-reader")
                    .set("enable.auto.commit", "false")
                    .create()
                    .unwrap();
                let mut assignment = TopicPartitionList::new();
                for p in 0..PARTITIONS {
                    assignment
                        .add_partition_offset(&topic, p, Offset::Beginning)
                        .unwrap();
                }
                consumer.assign(&assignment).unwrap();
                while !stop.load(Ordering::Acquire) {
                    if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                        let value = String::from_utf8_lossy(m.payload().unwrap_or_default());
                        seen.lock()
                            .unwrap()
                            .push((m.partition(), m.offset(), value.into_owned()));
                    }
                }
            }));
        }
        Load {
            history,
            seen,
            stop,
            stop_reading,
            threads,
        }
    }

    /// The longest a partition went without an acknowledgement since
    /// `from` (counting from `from` to its first): the unavailability a
    /// fault at `from` caused.
    fn longest_gap(&self, from: Instant) -> Duration {
        let history = self.history.lock().unwrap();
        let mut last: HashMap<i32, Instant> = HashMap::new();
        let mut longest = Duration::ZERO;
        for (p, _, _, at) in history.acked.iter().filter(|a| a.3 > from) {
            let before = last.insert(*p, *at).unwrap_or(from);
            longest = longest.max(at.duration_since(before));
        }
        longest
    }

    /// Acknowledgements after `at`.
    fn acked_since(&self, at: Instant) -> usize {
        self.history
            .lock()
            .unwrap()
            .acked
            .iter()
            .filter(|a| a.3 > at)
            .count()
    }

    /// Waits until every partition had an acknowledgement after `since`;
    /// returns how long after `since` the last of them came.
    fn wait_all_acked(&self, since: Instant, within: Duration) -> Duration {
        let deadline = Instant::now() + within;
        loop {
            let firsts: HashMap<i32, Instant> = {
                let history = self.history.lock().unwrap();
                let mut firsts = HashMap::new();
                for (p, _, _, at) in history.acked.iter().filter(|a| a.3 > since) {
                    firsts.entry(*p).or_insert(*at);
                }
                firsts
            };
            if firsts.len() == PARTITIONS as usize {
                return firsts.values().max().unwrap().duration_since(since);
            }
            assert!(
                Instant::now() < deadline,
                "partitions {:?} took no write within {within:?}",
                (0..PARTITIONS)
                    .filter(|p| !firsts.contains_key(p))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the producers, lets the consumer read up to the last
    /// acknowledged record of each partition (15 s at most), then stops it.
    fn stop(mut self) -> (History, Vec<(i32, i64, String)>) {
        self.stop.store(true, Ordering::Release);
        let producers = self.threads.remove(0);
        producers.join().expect("producer thread");
        let last: HashMap<i32, i64> = {
            let history = self.history.lock().unwrap();
            let mut last = HashMap::new();
            for (p, o, _, _) in &history.acked {
                let l = last.entry(*p).or_insert(*o);
                *l = (*l).max(*o);
            }
            last
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let caught_up = {
                let seen = self.seen.lock().unwrap();
                last.iter()
                    .all(|(p, o)| seen.iter().any(|r| r.0 == *p && r.1 >= *o))
            };
            if caught_up {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop_reading.store(true, Ordering::Release);
        for thread in self.threads.drain(..) {
            thread.join().expect("consumer thread");
        }
        let history = std::mem::take(&mut *self.history.lock().unwrap());
        let seen = std::mem::take(&mut *self.seen.lock().unwrap());
        (history, seen)
    }
}

impl Drop for Load {
    /// A scenario that panicked leaves no load running into the next.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.stop_reading.store(true, Ordering::Release);
    }
}

/// The checks once the cluster is whole again: the history against what
/// kafka-python reads, records the consumer saw during the fault against
/// the final log, and every replica's log byte for byte. Panics naming each
/// anomaly.
fn check(cluster: &Cluster, topic: &str, history: &History, seen: &[(i32, i64, String)]) {
    // Every replica has caught up (the ISR is whole, as every broker sees
    // it: a restarted one's image may still show the ISR of before).
    whole_isr(cluster, topic);
    // The consumer read through the fault: up to every partition's last
    // acknowledged record (so "read then lost" had all of it to check).
    let mut last_acked: HashMap<i32, i64> = HashMap::new();
    for (p, o, _, _) in &history.acked {
        let last = last_acked.entry(*p).or_insert(*o);
        *last = (*last).max(*o);
    }
    for (p, last) in &last_acked {
        let read = seen.iter().filter(|r| r.0 == *p).map(|r| r.1).max();
        assert!(
            read.is_some_and(|r| r >= *last),
            "the consumer never read partition {p}'s last acknowledged record: read up to {read:?}, acknowledged {last}"
        );
    }
    let acked: Acked = history
        .acked
        .iter()
        .map(|(p, o, v, _)| (*p, *o, v.clone()))
        .collect();
    let failed: Vec<String> = history.failed.iter().map(|(v, _)| v.clone()).collect();
    let read = read_with_kafka_python(&cluster.brokers[0].1.addr, topic, PARTITIONS);
    let mut anomalies = check_history(&acked, &failed, &read);
    let at: HashMap<(i32, i64), &str> = read
        .iter()
        .map(|(p, o, v)| ((*p, *o), v.as_str()))
        .collect();
    for (p, o, v) in seen {
        if at.get(&(*p, *o)) != Some(&v.as_str()) {
            anomalies.push(format!(
                "read then lost: {v} read at {p}/{o}, the log holds {:?} there",
                at.get(&(*p, *o))
            ));
        }
    }
    // Replicas agree byte for byte (settled: the followers fetch within
    // moments of the ISR being whole; compared until they do, briefly).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut divergent = Vec::new();
        for p in 0..PARTITIONS {
            let logs: Vec<Vec<u8>> = cluster
                .brokers
                .iter()
                .map(|(_, b)| log_bytes(&b.data_dir().join(format!("{topic}-{p}"))))
                .collect();
            if logs.iter().any(|l| l != &logs[0]) {
                divergent.push(format!(
                    "divergent: partition {p}'s replicas differ ({:?} bytes)",
                    logs.iter().map(Vec::len).collect::<Vec<_>>()
                ));
            }
        }
        if divergent.is_empty() || Instant::now() >= deadline {
            anomalies.extend(divergent);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        anomalies.is_empty(),
        "{} anomalies (of {} acknowledged, {} failed): {:#?}",
        anomalies.len(),
        acked.len(),
        failed.len(),
        &anomalies[..anomalies.len().min(20)]
    );
    eprintln!(
        "history checked: {} acknowledged, {} failed, {} read during the fault, no anomaly",
        acked.len(),
        failed.len(),
        seen.len()
    );
}

/// Waits until every broker sees a whole ISR for every partition of `topic`.
fn whole_isr(cluster: &Cluster, topic: &str) {
    for (_, broker) in &cluster.brokers {
        wait_for_isr(&broker.addr, topic, 3, Duration::from_secs(60));
    }
}

/// A fresh cluster with the topic and the load running for a moment.
fn prepare(name: &str) -> (Cluster, String, Load) {
    prepare_with(name, &[])
}

/// [`prepare`], the topic with `configs` too.
fn prepare_with(name: &str, configs: &[(&str, &str)]) -> (Cluster, String, Load) {
    prepare_on(Cluster::start(), name, configs)
}

fn prepare_on(cluster: Cluster, name: &str, configs: &[(&str, &str)]) -> (Cluster, String, Load) {
    let topic = common::topic(name);
    let mut all = vec![("min.insync.replicas", "2")];
    all.extend_from_slice(configs);
    create_replicated(&cluster.brokers, &topic, PARTITIONS, 3, &all);
    wait_for_isr(
        &cluster.brokers[0].1.addr,
        &topic,
        3,
        Duration::from_secs(20),
    );
    let load = Load::start(&cluster.servers(), &topic);
    let warm = Instant::now();
    load.wait_all_acked(warm, Duration::from_secs(30));
    (cluster, topic, load)
}

fn load_for() -> Duration {
    Duration::from_millis(if rounds() > 1 { 3000 } else { 1000 })
}

fn report(what: &str, windows: &mut [Duration]) {
    windows.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "{what}: {} round(s), longest a partition took no write: p50 {:.0} ms, max {:.0} ms: {:?}",
        windows.len(),
        ms(&windows[windows.len() / 2]),
        ms(windows.last().unwrap()),
        windows
            .iter()
            .map(|w| ms(w).round() as u64)
            .collect::<Vec<_>>()
    );
}

/// kill -9 of the broker leading most partitions, under load: the others
/// take over (reported: the unavailability window); it comes back and
/// truncates what only it had.
#[test]
fn kill_9_of_the_busiest_leader() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (mut cluster, topic, load) = prepare("kill-9");
        std::thread::sleep(load_for());
        let victim = cluster.busiest_leader(1, &topic);
        cluster.broker(victim).kill();
        let at = Instant::now();
        load.wait_all_acked(at, Duration::from_secs(30));
        std::thread::sleep(load_for());
        cluster.broker(victim).start_again_at_same_address();
        std::thread::sleep(load_for());
        windows.push(load.longest_gap(at));
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
    report("kill -9 of the busiest leader", &mut windows);
}

/// SIGSTOP of the busiest leader for twice the session timeout: it is
/// fenced and its partitions move; while paused and after SIGCONT it must
/// acknowledge nothing that is later lost.
#[test]
fn a_paused_leader_acknowledges_nothing_later_lost() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (mut cluster, topic, load) = prepare("pause");
        std::thread::sleep(load_for());
        let victim = cluster.busiest_leader(1, &topic);
        cluster.signal(victim, libc::SIGSTOP);
        let at = Instant::now();
        std::thread::sleep(Duration::from_millis(2 * SESSION_MS));
        cluster.signal(victim, libc::SIGCONT);
        load.wait_all_acked(at, Duration::from_secs(30));
        std::thread::sleep(load_for() * 2);
        windows.push(load.longest_gap(at));
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
    report("SIGSTOP of the busiest leader", &mut windows);
}

/// Two of three brokers down: no quorum, and no partition has two
/// in-sync replicas, so nothing is acknowledged until they return; then
/// the load goes on and nothing acknowledged before is lost.
#[test]
fn two_of_three_down_acknowledges_nothing() {
    let _serial = serial();
    for _ in 0..rounds() {
        let (mut cluster, topic, load) = prepare("two-down");
        std::thread::sleep(load_for());
        // The survivor leads partitions (its acks=all writes are the ones
        // that must not be acknowledged).
        let survivor = cluster.busiest_leader(1, &topic);
        let others: Vec<i32> = (1..=3).filter(|id| *id != survivor).collect();
        for id in &others {
            cluster.broker(*id).kill();
        }
        // Answers already under way may still come (written before the kill).
        std::thread::sleep(Duration::from_millis(500));
        let at = Instant::now();
        std::thread::sleep(Duration::from_secs(4));
        assert_eq!(
            load.acked_since(at),
            0,
            "acknowledged with one broker of three (survivor {survivor})"
        );
        for id in &others {
            cluster.broker(*id).start_again_at_same_address();
        }
        load.wait_all_acked(Instant::now(), Duration::from_secs(60));
        std::thread::sleep(load_for());
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
}

/// The active controller cut off from the other voters: they elect
/// another; the cut-off broker is fenced and its partitions move; once
/// healed every node converges (the same controller, full ISRs, the same
/// logs).
#[test]
fn a_controller_cut_off_is_replaced_and_converges() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (cluster, topic, load) = prepare("quorum-cut");
        std::thread::sleep(load_for());
        let old = agreed_leader(&view(&cluster.brokers), Duration::from_secs(10));
        cluster.isolate(old);
        let at = Instant::now();
        let others: Vec<(i32, &TestBroker)> = cluster
            .brokers
            .iter()
            .filter(|(id, _)| *id != old)
            .map(|(id, b)| (*id, b))
            .collect();
        let new = agreed_leader(&others, Duration::from_secs(20));
        assert_ne!(new, old, "the majority elected a new controller");
        load.wait_all_acked(
            at + Duration::from_millis(SESSION_MS),
            Duration::from_secs(30),
        );
        std::thread::sleep(load_for());
        cluster.heal();
        let controller = agreed_leader(&view(&cluster.brokers), Duration::from_secs(20));
        let everyone: Vec<(i32, i32)> = cluster
            .brokers
            .iter()
            .map(|(id, b)| (*id, port_of(b)))
            .collect();
        wait_for_brokers(
            &cluster.brokers.iter().map(|(_, b)| b).collect::<Vec<_>>(),
            &everyone,
            controller,
        );
        std::thread::sleep(load_for());
        windows.push(load.longest_gap(at));
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
    report("controller cut off", &mut windows);
}

/// A rolling restart under load (SIGTERM, start again, wait for full ISRs,
/// next): controlled shutdown moves leadership first, so no request fails.
#[test]
fn a_rolling_restart_fails_no_request() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (mut cluster, topic, load) = prepare("rolling");
        let at = Instant::now();
        for id in 1..=3 {
            std::thread::sleep(load_for());
            cluster.broker(id).stop();
            cluster.broker(id).start_again_at_same_address();
            wait_for_isr(
                &cluster.brokers[0].1.addr,
                &topic,
                3,
                Duration::from_secs(60),
            );
        }
        std::thread::sleep(load_for());
        windows.push(load.longest_gap(at));
        let (history, seen) = load.stop();
        assert!(
            history.failed.is_empty(),
            "{} requests failed during the rolling restart: {:?}",
            history.failed.len(),
            &history.failed[..history.failed.len().min(5)]
        );
        check(&cluster, &topic, &history, &seen);
    }
    report("rolling restart", &mut windows);
}

/// Every partition of `topic` moved off the busiest leader (to the other
/// two brokers: the leader hands over, in the change that records the
/// move) and the leader killed (-9) right after; then every partition moved
/// back onto all three
/// while it is down (the moves wait for it: listed, the ISR of two); it
/// starts again, possibly with the logs it had (if it died before removing
/// them), catches up or truncates, and the moves complete. The history and
/// the three replicas' logs are checked as for every fault.
#[test]
fn moves_off_a_killed_leader_and_back_lose_nothing() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (mut cluster, topic, load) = prepare("move");
        std::thread::sleep(load_for());
        let victim = cluster.busiest_leader(1, &topic);
        let others: Vec<i32> = (1..=3).filter(|&b| b != victim).collect();
        let asked = cluster.broker(others[0]).addr.clone();
        let at = Instant::now();
        for p in 0..PARTITIONS {
            assert_eq!(reassign(&asked, &topic, p, Some(&others), true), 0);
        }
        cluster.broker(victim).kill();
        let killed = Instant::now();
        load.wait_all_acked(killed, Duration::from_secs(30));
        // If the victim was the active controller, the others elect
        // another first: asked meanwhile, the change is refused as an admin
        // client would be told (NOT_CONTROLLER, REQUEST_TIMED_OUT) and asked
        // again.
        for p in 0..PARTITIONS {
            let back = [others[0], others[1], victim];
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match reassign(&asked, &topic, p, Some(&back), true) {
                    0 => break,
                    code @ (7 | 41) if Instant::now() < deadline => {
                        eprintln!("partition {p}'s move back refused ({code}); asking again");
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    code => panic!("partition {p}'s move back refused with {code}"),
                }
            }
        }
        let waiting = moves(&asked, &topic);
        assert_eq!(
            waiting.len(),
            PARTITIONS as usize,
            "every move back waits for the killed broker: {waiting:?}"
        );
        assert!(waiting
            .iter()
            .all(|(_, _, adding, _)| *adding == vec![victim]));
        std::thread::sleep(load_for());
        cluster.broker(victim).start_again_at_same_address();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !moves(&asked, &topic).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the moves back never completed: {:?}",
                moves(&asked, &topic)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(load_for());
        windows.push(load.longest_gap(at));
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
    report("moves off a killed leader and back", &mut windows);
}

/// The disk of the busiest leader fails under load: every partition
/// directory it holds vanishes (moved away, as when a disk is pulled), so
/// its next segment roll fails and takes each of its replicas offline
/// (segments roll every second here). It reports them in its heartbeat; the
/// controller takes it out of every ISR and another in-sync replica leads,
/// while it stays live for the quorum. Then it is restarted (SIGTERM: a
/// clean shutdown with failed logs) on an empty disk, fetches everything
/// back and rejoins; the history and the three logs are checked.
#[test]
fn a_leader_whose_disk_fails_hands_its_partitions_over() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (mut cluster, topic, load) = prepare_with("disk", &[("segment.ms", "1000")]);
        std::thread::sleep(load_for());
        let victim = cluster.busiest_leader(1, &topic);
        let data = cluster.broker(victim).data_dir();
        let pulled = tempfile::tempdir().unwrap();
        for p in 0..PARTITIONS {
            let name = format!("{topic}-{p}");
            std::fs::rename(data.join(&name), pulled.path().join(&name)).unwrap();
        }
        let at = Instant::now();
        load.wait_all_acked(at, Duration::from_secs(30));
        // Out of every ISR, leading nothing, as another broker sees it.
        let other = addr_of(&cluster.brokers, if victim == 1 { 2 } else { 1 });
        let placed = wait_for_isr(&other, &topic, 2, Duration::from_secs(30));
        assert!(
            placed
                .iter()
                .all(|(leader, isr)| *leader != victim && !isr.contains(&victim)),
            "broker {victim}'s failed replicas left every ISR: {placed:?}"
        );
        // Still live: listed among the brokers.
        assert!(
            listed_brokers(&other).0.iter().any(|(id, _)| *id == victim),
            "broker {victim} stays registered"
        );
        std::thread::sleep(load_for());
        cluster.broker(victim).stop();
        cluster.broker(victim).start_again_at_same_address();
        std::thread::sleep(load_for());
        windows.push(load.longest_gap(at));
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
    report("a leader's disk fails", &mut windows);
}

/// The busiest leader cut off from its clients and its followers (its
/// advertised listener, behind a proxy, refuses everyone) while its quorum
/// links stand: it stays live and keeps its leaderships (its heartbeats
/// reach the controller), its followers cannot fetch, and after
/// replica.lag.time.max.ms (2 s here) it takes them out of its ISRs
/// (AlterPartition over the quorum link); with min.insync.replicas=2
/// nothing more can be acknowledged there. Healed, the followers catch up
/// and every ISR is whole again; the history and the logs are checked.
#[test]
fn a_leader_cut_from_its_followers_shrinks_and_regrows_its_isrs() {
    let _serial = serial();
    let mut windows = Vec::new();
    for _ in 0..rounds() {
        let (cluster, topic, load) = prepare_on(Cluster::start_with(true), "data-cut", &[]);
        std::thread::sleep(load_for());
        let victim = cluster.busiest_leader(1, &topic);
        let direct = addr_of(&cluster.brokers, victim);
        let led: Vec<usize> = leaders(&direct, &topic)
            .expect("every partition led")
            .iter()
            .enumerate()
            .filter(|(_, (leader, _))| *leader == victim)
            .map(|(p, _)| p)
            .collect();
        cluster.cut_data(victim);
        let at = Instant::now();
        let deadline = at + Duration::from_secs(20);
        loop {
            let seen = placements(&direct, &topic);
            if led
                .iter()
                .all(|&p| seen[p].0 == victim && seen[p].2 == vec![victim])
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "broker {victim} never shrank the ISRs of {led:?} to itself: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let shrunk = at.elapsed();
        // No failover: another broker sees the victim lead them still.
        let other = addr_of(&cluster.brokers, if victim == 1 { 2 } else { 1 });
        let seen = placements(&other, &topic);
        assert!(
            led.iter().all(|&p| seen[p].0 == victim),
            "broker {victim} keeps leading {led:?}: {seen:?}"
        );
        std::thread::sleep(load_for());
        cluster.heal_data(victim);
        load.wait_all_acked(Instant::now(), Duration::from_secs(30));
        std::thread::sleep(load_for());
        windows.push(load.longest_gap(at));
        eprintln!("the ISRs shrank {} ms after the cut", shrunk.as_millis());
        let (history, seen) = load.stop();
        check(&cluster, &topic, &history, &seen);
    }
    report("a leader cut from its followers", &mut windows);
}

//! The metadata quorum (issue 15) on its own: three voters, each on its own
//! thread and runtime as three brokers' shard 0s would be, over real TCP on
//! loopback, with their logs on disk. A leader is elected; commands written
//! to it reach every node in one order; the leader's loss elects another
//! among the two left, which takes writes; the old leader restarts from its
//! files and converges; a write without a majority is never acknowledged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice::cluster::{Machine, Quorum, QuorumConfig, QuorumStatus, WriteError};
use sluice::io::disk::Disk;
use sluice::storage::commit::GroupCommit;

/// A machine that remembers the commands applied, in order.
#[derive(Default)]
struct Commands(std::cell::RefCell<Vec<String>>);

impl Machine for Commands {
    async fn apply(&self, _index: u64, command: &str) -> Result<(), String> {
        self.0.borrow_mut().push(command.to_string());
        Ok(())
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.0.borrow()).unwrap()
    }

    async fn restore(&self, _end: u64, snapshot: &[u8]) -> Result<(), String> {
        *self.0.borrow_mut() = serde_json::from_slice(snapshot).map_err(|e| e.to_string())?;
        Ok(())
    }
}

enum Ask {
    Write(String, async_channel::Sender<Result<(), WriteError>>),
    Status(async_channel::Sender<(QuorumStatus, Vec<String>)>),
    Stop,
}

/// One voter on its own thread.
struct Node {
    id: u64,
    asks: async_channel::Sender<Ask>,
    thread: Option<JoinHandle<()>>,
}

fn start(id: u64, dir: PathBuf, voters: &BTreeMap<u64, String>) -> Node {
    let mut config = QuorumConfig::new(id, voters.clone());
    // Shorter than KRaft's, for a quick test.
    config.election_timeout_ms = 300;
    config.heartbeat_interval_ms = 100;
    let addr = voters[&id].clone();
    let (asks, asked) = async_channel::unbounded::<Ask>();
    let thread = std::thread::spawn(move || {
        compio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                // The port may still be held for a moment by the last run's socket.
                let deadline = Instant::now() + Duration::from_secs(10);
                let listener = loop {
                    match sluice::io::rpc::bind(&addr) {
                        Ok(l) => break l,
                        Err(e) if Instant::now() < deadline => {
                            eprintln!("node {id}: bind {addr}: {e}; retrying");
                            compio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("node {id}: bind {addr}: {e}"),
                    }
                };
                let commit = Rc::new(GroupCommit::default());
                let quorum = Quorum::start(
                    &config,
                    &dir,
                    &Disk::Real,
                    commit,
                    Some(listener),
                    Commands::default(),
                )
                .await
                .expect("quorum starts");
                let quorum = Rc::new(quorum);
                while let Ok(ask) = asked.recv().await {
                    match ask {
                        Ask::Write(command, reply) => {
                            // A task: a write without a majority waits, the node
                            // still answers.
                            let quorum = quorum.clone();
                            compio::runtime::spawn(async move {
                                let result = quorum.write(command).await.map(|_| ());
                                let _ = reply.send(result).await;
                            })
                            .detach();
                        }
                        Ask::Status(reply) => {
                            let applied = quorum.machine().0.borrow().clone();
                            let _ = reply.send((quorum.status(), applied)).await;
                        }
                        Ask::Stop => break,
                    }
                }
                quorum.shutdown().await;
            });
    });
    Node {
        id,
        asks,
        thread: Some(thread),
    }
}

impl Node {
    fn status(&self) -> (QuorumStatus, Vec<String>) {
        let (tx, rx) = async_channel::bounded(1);
        self.asks.send_blocking(Ask::Status(tx)).unwrap();
        rx.recv_blocking().unwrap()
    }

    fn write(&self, command: &str) -> Result<(), WriteError> {
        let (tx, rx) = async_channel::bounded(1);
        self.asks
            .send_blocking(Ask::Write(command.to_string(), tx))
            .unwrap();
        rx.recv_blocking().unwrap()
    }

    /// Stops the node: its Raft and listener end, its files stay.
    fn stop(mut self) {
        let _ = self.asks.send_blocking(Ask::Stop);
        self.thread.take().unwrap().join().unwrap();
    }
}

/// Waits until `nodes` agree on one leader among them, which knows it leads.
fn leader(nodes: &[&Node], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let statuses: Vec<QuorumStatus> = nodes.iter().map(|n| n.status().0).collect();
        let first = statuses[0].leader;
        if let Some(id) = first {
            let agreed = statuses.iter().all(|s| s.leader == Some(id));
            let leads = statuses.iter().any(|s| s.node_id == id && s.is_leader);
            if agreed && leads {
                return id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within {within:?}: {statuses:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every node applied `expected`, and returns their statuses.
fn converge(nodes: &[&Node], expected: &[String], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let applied: Vec<(u64, Vec<String>)> = nodes
            .iter()
            .map(|n| {
                let (_, commands) = n.status();
                (n.id, commands)
            })
            .collect();
        for (id, commands) in &applied {
            assert!(
                expected.starts_with(commands),
                "node {id} applied {commands:?}, not a prefix of {expected:?}"
            );
        }
        if applied.iter().all(|(_, c)| c == expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not converged within {within:?}: {applied:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `command` at whichever node leads: a fresh leader may lose its
/// term to a node whose election timer ran out meanwhile, and a refusal
/// (NotLeader: nothing was appended) is retried at the next leader. A write
/// whose fate is unknown fails the test (it would need deduplication).
fn write_at_leader(nodes: &BTreeMap<u64, Node>, command: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<&Node> = nodes.values().collect();
        let id = leader(&alive, Duration::from_secs(10));
        match nodes[&id].write(command) {
            Ok(()) => return,
            Err(WriteError::NotLeader { .. }) if Instant::now() < deadline => {
                eprintln!("{command}: {id} no longer leads; again");
            }
            Err(error) => panic!("{command} at leader {id}: {error}"),
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn three_voters_elect_replicate_fail_over_and_converge() {
    let temp = tempfile::tempdir().unwrap();
    let voters: BTreeMap<u64, String> = (1..=3)
        .map(|id| (id, format!("127.0.0.1:{}", free_port())))
        .collect();
    let dir = |id: u64| temp.path().join(format!("node-{id}"));
    let mut nodes: BTreeMap<u64, Node> = (1..=3)
        .map(|id| (id, start(id, dir(id), &voters)))
        .collect();
    let all = |nodes: &BTreeMap<u64, Node>| -> Vec<u64> { nodes.keys().copied().collect() };

    let started = Instant::now();
    let first = leader(&nodes.values().collect::<Vec<_>>(), Duration::from_secs(10));
    println!("leader {first} elected {:?} after start", started.elapsed());
    // A follower refuses a write and names the leader.
    let follower = all(&nodes).into_iter().find(|&id| id != first).unwrap();
    assert_eq!(
        nodes[&follower].write("from-a-follower"),
        Err(WriteError::NotLeader {
            leader: Some(first)
        })
    );
    let mut expected = Vec::new();
    for i in 0..20 {
        let command = format!("first-{i}");
        write_at_leader(&nodes, &command);
        expected.push(command);
    }
    converge(
        &nodes.values().collect::<Vec<_>>(),
        &expected,
        Duration::from_secs(10),
    );

    // The leader goes; the two left elect one of them and take writes.
    let first = leader(&nodes.values().collect::<Vec<_>>(), Duration::from_secs(10));
    let lost = Instant::now();
    nodes.remove(&first).unwrap().stop();
    let left: Vec<&Node> = nodes.values().collect();
    let second = leader(&left, Duration::from_secs(10));
    assert_ne!(second, first);
    let mut wrote_at = None;
    for i in 0..10 {
        let command = format!("second-{i}");
        write_at_leader(&nodes, &command);
        wrote_at.get_or_insert_with(|| lost.elapsed());
        expected.push(command);
    }
    println!(
        "leader {first} stopped: leader {second} elected and writing {:?} later",
        wrote_at.unwrap()
    );
    let (status, _) = nodes[&second].status();
    assert!(status.term >= 2, "a new term: {status:?}");

    // The old leader comes back from its files and catches up.
    nodes.insert(first, start(first, dir(first), &voters));
    converge(
        &nodes.values().collect::<Vec<_>>(),
        &expected,
        Duration::from_secs(10),
    );
    let statuses: Vec<QuorumStatus> = nodes.values().map(|n| n.status().0).collect();
    let leader_status = statuses.iter().find(|s| s.is_leader).unwrap();
    assert_eq!(
        leader_status.replicated_end.len(),
        3,
        "the leader tracks every voter: {leader_status:?}"
    );

    // Two of three gone: the one left cannot commit, and says so rather
    // than acknowledging (it answers NotLeader once it steps down, or the
    // write stays unacknowledged until the test gives up on it).
    let survivor = leader(&nodes.values().collect::<Vec<_>>(), Duration::from_secs(10));
    for id in all(&nodes) {
        if id != survivor {
            nodes.remove(&id).unwrap().stop();
        }
    }
    let alone = nodes.remove(&survivor).unwrap();
    let (tx, rx) = async_channel::bounded(1);
    alone
        .asks
        .send_blocking(Ask::Write("without-a-majority".to_string(), tx))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    match rx.try_recv() {
        Err(async_channel::TryRecvError::Empty) => {}
        Ok(Err(_)) => {}
        Ok(Ok(())) => panic!("a write was acknowledged by one voter of three"),
        Err(e) => panic!("{e}"),
    }
    let (_, applied) = alone.status();
    assert!(!applied.contains(&"without-a-majority".to_string()));
    drop(rx);
    alone.stop();

    // Started again with voters other than those the quorum was formed
    // with (a fourth one): refused, naming both. (Another address for a
    // voter is this node's own affair: it dials what its flag says.)
    let mut other = voters.clone();
    other.insert(4, format!("127.0.0.1:{}", free_port()));
    let error = start_refused(survivor, dir(survivor), &other);
    assert!(error.contains("differs from the voters"), "{error}");
    assert!(error.contains(&voters[&survivor]), "{error}");
    assert!(error.contains("4@"), "{error}");
}

/// A node whose flag gives the other voters its own address (a typo, or a
/// proxy pointing back) must not count its own vote three times: messages
/// name the voter they are for, and a node answers only its own. Alone in
/// truth, it never leads and commits nothing.
#[test]
fn a_node_that_reaches_itself_for_other_voters_never_leads_alone() {
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let voters: BTreeMap<u64, String> = (1..=3).map(|id| (id, addr.clone())).collect();
    let node = start(1, dir.path().join("n1"), &voters);
    std::thread::sleep(Duration::from_secs(3));
    let (status, _) = node.status();
    assert!(!status.is_leader, "elected by its own votes: {status:?}");
    let (tx, rx) = async_channel::bounded(1);
    node.asks
        .send_blocking(Ask::Write("alone".to_string(), tx))
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !matches!(rx.try_recv(), Ok(Ok(()))),
        "a write was committed by one voter of three"
    );
    let (_, applied) = node.status();
    assert!(!applied.contains(&"alone".to_string()));
    drop(rx);
    node.stop();
}

/// Starts a voter that is expected not to start, and returns why.
fn start_refused(id: u64, dir: PathBuf, voters: &BTreeMap<u64, String>) -> String {
    let config = QuorumConfig::new(id, voters.clone());
    let addr = voters[&id].clone();
    compio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            let listener = sluice::io::rpc::bind(&addr).unwrap();
            let started = Quorum::start(
                &config,
                &dir,
                &Disk::Real,
                Rc::new(GroupCommit::default()),
                Some(listener),
                Commands::default(),
            )
            .await;
            match started {
                Ok(_) => panic!("node {id} started with voters {voters:?}"),
                Err(error) => error.to_string(),
            }
        })
}

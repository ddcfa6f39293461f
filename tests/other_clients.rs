//! Third-party clients against the real broker: kafka-python, kafkajs and kcat.
//!
//! The scripts live in tests/clients/. Their tools are installed by
//! tools/run-tests; a missing tool fails the test (it never passes silently).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TestBroker;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(180);
const KCAT_TIMEOUT: Duration = Duration::from_secs(60);

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("clients")
}

/// What a finished (or timed-out) child process produced.
struct Output {
    status: Option<i32>,
    timed_out: bool,
    stdout: String,
    stderr: String,
}

impl Output {
    fn describe(&self, what: &str) -> String {
        format!(
            "{what}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            if self.timed_out {
                "timed out (killed)".to_string()
            } else {
                format!("exit status {:?}", self.status)
            },
            self.stdout,
            self.stderr
        )
    }

    fn ok(&self) -> bool {
        !self.timed_out && self.status == Some(0)
    }
}

/// Runs `command` to completion (feeding `stdin`), killing it after `timeout`.
fn run(mut command: Command, stdin: Option<&[u8]>, timeout: Duration) -> Output {
    let program = format!("{:?}", command.get_program());
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| {
        panic!("cannot start {program}: {e}; run tools/run-tests to install the test tools")
    });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).expect("write child stdin");
        // Dropping the pipe sends EOF.
    }
    let mut out_pipe = child.stdout.take().expect("piped stdout");
    let mut err_pipe = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break (status.code(), false);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        timed_out,
        stdout: out_thread.join().unwrap_or_default(),
        stderr: err_thread.join().unwrap_or_default(),
    }
}

/// Fails the test unless `command` runs and exits 0.
fn require(what: &str, mut command: Command) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let ok = matches!(command.status(), Ok(status) if status.success());
    assert!(
        ok,
        "{what} is missing: run tools/run-tests (it installs the third-party client test tools)"
    );
}

fn run_script(interpreter: &str, script: &str, broker: &TestBroker, topic: &str) {
    let mut command = Command::new(interpreter);
    command
        .current_dir(clients_dir())
        .arg(clients_dir().join(script))
        .arg(&broker.addr)
        .arg(topic);
    let output = run(command, None, SCRIPT_TIMEOUT);
    let report = output.describe(&format!("{interpreter} {script} {} {topic}", broker.addr));
    assert!(output.ok(), "{report}");
    print!("{}", output.stdout);
}

#[test]
fn kafka_python_admin_produce_and_groupless_consume() {
    let mut check = Command::new("python3");
    check.args(["-c", "import kafka"]);
    require(
        "python3 with the kafka-python module (tests/clients/requirements.txt)",
        check,
    );
    let broker = TestBroker::start();
    run_script(
        "python3",
        "kafka_python_smoke.py",
        &broker,
        &common::topic("kafka-python"),
    );
}

#[test]
fn kafka_python_transactions_commit_abort_and_fence() {
    let mut check = Command::new("python3");
    check.args(["-c", "import kafka"]);
    require(
        "python3 with the kafka-python module (tests/clients/requirements.txt)",
        check,
    );
    let broker = TestBroker::start();
    run_script(
        "python3",
        "kafka_python_transactions.py",
        &broker,
        &common::topic("kafka-python-txn"),
    );
}

#[test]
fn kafkajs_admin_produce_fetch_and_delete() {
    let mut check = Command::new("node");
    check.arg("--version");
    require("node", check);
    assert!(
        clients_dir().join("node_modules/kafkajs/package.json").is_file(),
        "kafkajs is missing from tests/clients/node_modules: run tools/run-tests (it runs npm ci --prefix tests/clients)"
    );
    let broker = TestBroker::start();
    run_script(
        "node",
        "kafkajs_smoke.js",
        &broker,
        &common::topic("kafkajs"),
    );
}

#[test]
fn kcat_metadata_produce_and_consume_keyed_lines() {
    let mut check = Command::new("kcat");
    check.arg("-V");
    require("kcat (Debian package kcat)", check);
    // kcat cannot create topics: let the produce auto-create one with 3
    // partitions so per-key ordering spans several partitions.
    let broker = TestBroker::start_with(&["--auto-create-topics", "true", "--num-partitions", "3"]);
    let topic = common::topic("kcat");
    const KEYS: usize = 7;
    const LINES: usize = 100;
    let input: String = (0..LINES)
        .map(|i| format!("k{}:v{i}\n", i % KEYS))
        .collect();

    let mut produce = Command::new("kcat");
    produce.args([
        "-b",
        &broker.addr,
        "-P",
        "-t",
        &topic,
        "-K:",
        "-X",
        "acks=all",
    ]);
    let output = run(produce, Some(input.as_bytes()), KCAT_TIMEOUT);
    assert!(output.ok(), "{}", output.describe("kcat -P"));

    let mut list = Command::new("kcat");
    list.args(["-b", &broker.addr, "-L"]);
    let output = run(list, None, KCAT_TIMEOUT);
    assert!(output.ok(), "{}", output.describe("kcat -L"));
    let expected = format!("topic \"{topic}\" with 3 partitions");
    assert!(
        output.stdout.contains(&expected),
        "kcat -L does not show {expected:?}\n{}",
        output.describe("kcat -L")
    );
    assert!(
        output.stdout.contains(&format!("at {}", broker.addr)),
        "kcat -L does not list the broker at {}\n{}",
        broker.addr,
        output.describe("kcat -L")
    );

    let mut consume = Command::new("kcat");
    consume.args([
        "-b",
        &broker.addr,
        "-C",
        "-t",
        &topic,
        "-o",
        "beginning",
        "-e",
        "-f",
        "%k:%s\n",
    ]);
    let output = run(consume, None, KCAT_TIMEOUT);
    assert!(output.ok(), "{}", output.describe("kcat -C"));
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        LINES,
        "kcat -C returned {} lines, expected {LINES}\n{}",
        lines.len(),
        output.describe("kcat -C")
    );

    // Every line exactly once, and each key's values in production order.
    let mut per_key: Vec<Vec<usize>> = vec![Vec::new(); KEYS];
    for line in &lines {
        let (key, value) = line.split_once(':').unwrap_or_else(|| {
            panic!(
                "unexpected kcat line {line:?}\n{}",
                output.describe("kcat -C")
            )
        });
        let k: usize = key
            .strip_prefix('k')
            .and_then(|k| k.parse().ok())
            .expect("key kN");
        let v: usize = value
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .expect("value vN");
        assert_eq!(v % KEYS, k, "line {line:?} pairs the wrong key and value");
        per_key[k].push(v);
    }
    for (k, values) in per_key.iter().enumerate() {
        let expected: Vec<usize> = (0..LINES).filter(|i| i % KEYS == k).collect();
        assert_eq!(
            values, &expected,
            "key k{k}: values out of order, missing or duplicated"
        );
    }
    println!("kcat: {LINES} keyed lines round-tripped in per-key order through topic {topic} (3 partitions)");
}

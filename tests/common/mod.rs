//! Test harness: runs the real `sluice` binary on an ephemeral port and a
//! temporary data dir, and stops it with SIGTERM (clean) or SIGKILL (crash).
#![allow(dead_code)]

pub mod clients;
pub mod cluster;
pub mod proxy;
pub mod wire;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A broker process for one test.
pub struct TestBroker {
    child: Option<Child>,
    pub addr: String,
    /// `http://ADDR/metrics` when the broker was started with `--metrics-listen`.
    pub metrics_url: Option<String>,
    pub data_dir: PathBuf,
    /// Keeps the temporary data dir alive (and removes it at the end).
    _temp: Option<tempfile::TempDir>,
    extra_args: Vec<String>,
    cores: usize,
    /// When set, the broker's log (storage at info level) is appended here.
    log_path: Option<PathBuf>,
    /// When set, the broker runs with this RLIMIT_NOFILE (soft and hard).
    nofile: Option<u64>,
}

impl TestBroker {
    /// Starts a broker with 2 shards on a fresh data dir.
    pub fn start() -> TestBroker {
        TestBroker::start_with(&[])
    }

    /// Starts a broker with extra command-line flags.
    pub fn start_with(extra_args: &[&str]) -> TestBroker {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path().join("data");
        let mut broker = TestBroker {
            child: None,
            addr: String::new(),
            metrics_url: None,
            data_dir,
            _temp: Some(temp),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            cores: 2,
            log_path: None,
            nofile: None,
        };
        broker.spawn();
        broker
    }

    /// Starts a logging broker (see [`TestBroker::start_logging`]) whose open
    /// file limit, soft and hard, is `nofile`.
    pub fn start_with_nofile(nofile: u64, extra_args: &[&str]) -> TestBroker {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut broker = TestBroker {
            child: None,
            addr: String::new(),
            metrics_url: None,
            data_dir: temp.path().join("data"),
            log_path: Some(temp.path().join("broker.log")),
            _temp: Some(temp),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            cores: 2,
            nofile: Some(nofile),
        };
        broker.spawn();
        broker
    }

    /// Starts a broker like [`TestBroker::start_with`] whose log, with the
    /// storage engine's info lines, goes to a file that [`TestBroker::log_text`] reads.
    pub fn start_logging(extra_args: &[&str]) -> TestBroker {
        let temp = tempfile::tempdir().expect("temp dir");
        let mut broker = TestBroker {
            child: None,
            addr: String::new(),
            metrics_url: None,
            data_dir: temp.path().join("data"),
            log_path: Some(temp.path().join("broker.log")),
            _temp: Some(temp),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            cores: 2,
            nofile: None,
        };
        broker.spawn();
        broker
    }

    /// The file the broker logs to, when started with `start_logging`.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.log_path.clone()
    }

    /// Everything the broker logged so far (every run of it), without colour codes.
    pub fn log_text(&self) -> String {
        let path = self.log_path.as_ref().expect("started with start_logging");
        let raw = std::fs::read_to_string(path).unwrap_or_default();
        // Strip ANSI escape sequences (ESC [ ... letter).
        let mut text = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c == '\u{1b}' {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            } else {
                text.push(c);
            }
        }
        text
    }

    /// Starts a broker on a data dir the caller owns (e.g. on a small file system).
    pub fn start_in(data_dir: &Path, extra_args: &[&str]) -> TestBroker {
        let mut broker = TestBroker {
            child: None,
            addr: String::new(),
            metrics_url: None,
            data_dir: data_dir.to_path_buf(),
            _temp: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            cores: 2,
            log_path: None,
            nofile: None,
        };
        broker.spawn();
        broker
    }

    /// Starts a stopped broker again on the same data dir and at the same
    /// address (as a restarted Kafka broker comes back), so that clients
    /// reconnect on their own. Right after a SIGKILL binding the address can
    /// fail for a moment ("Address already in use" was seen while the killed
    /// broker's connections were still closing): the start is retried for up
    /// to 10 s.
    pub fn start_again_at_same_address(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        let listen = self.addr.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_spawn_at(&listen) {
                Ok(()) => return,
                Err(error) if Instant::now() >= deadline => {
                    panic!("broker did not start again at {listen}: {error}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn spawn(&mut self) {
        if let Err(error) = self.try_spawn_at("127.0.0.1:0") {
            panic!("{error}");
        }
    }

    fn try_spawn_at(&mut self, listen: &str) -> Result<(), String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sluice"));
        command
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--cores")
            .arg(self.cores.to_string())
            .args(&self.extra_args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(path) = &self.log_path {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("broker log file");
            command
                .env("RUST_LOG", "warn,sluice::storage=info")
                .stderr(Stdio::from(file));
        }
        if let Some(limit) = self.nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: the closure runs in the forked child before exec and only
            // calls setrlimit, which is async-signal-safe; it allocates nothing.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("sluice binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(
                Instant::now() < deadline,
                "broker did not report its address in time"
            );
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("sluice metrics on ") {
                        self.metrics_url = Some(url.trim().to_string());
                    }
                    if let Some(addr) = line.strip_prefix("sluice listening on ") {
                        break addr.trim().to_string();
                    }
                }
                Some(Err(e)) => panic!("reading broker stdout: {e}"),
                None => {
                    return Err(format!(
                        "broker exited before listening: {:?}",
                        child.wait()
                    ))
                }
            }
        };
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.child = Some(child);
        self.addr = addr;
        Ok(())
    }

    /// Stops the broker with SIGTERM and waits; returns its exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child's pid has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("broker did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker with SIGKILL (a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same data dir (on a new port).
    pub fn restart(&mut self) {
        assert_eq!(self.stop(), Some(0), "clean shutdown exits 0");
        self.spawn();
    }

    /// Stops cleanly and starts again on the same data dir with other extra flags.
    pub fn restart_with(&mut self, extra_args: &[&str]) {
        assert_eq!(self.stop(), Some(0), "clean shutdown exits 0");
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// Starts a stopped broker again on the same data dir with other extra flags.
    pub fn start_again_with(&mut self, extra_args: &[&str]) {
        assert!(self.child.is_none(), "the broker is still running");
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        self.spawn();
    }

    /// [`TestBroker::start_again`], or why it did not start (e.g. a port it
    /// must bind is still held by a killed broker's connections).
    pub fn try_start_again(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "the broker is still running");
        self.try_spawn_at("127.0.0.1:0")
    }

    /// Starts a stopped broker again on the same data dir (on a new port).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the broker is still running");
        self.spawn();
    }

    /// Crash and recover: SIGKILL (if still running), then start again on the
    /// same data dir (on a new port).
    pub fn restart_after_kill(&mut self) {
        self.kill();
        self.spawn();
    }

    /// The broker process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A unique topic name per test.
pub fn topic(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Runs `script` with python3 (kafka-python installed by tools/run-tests)
/// and `args` as `sys.argv[1..]`; its standard output, trimmed. Panics with
/// its standard error if it fails.
pub fn python(script: &str, args: &[&str]) -> String {
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs (tools/run-tests installs kafka-python)");
    assert!(
        output.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// `method path` against the metrics endpoint at `url`: (status line, body).
pub fn http_get(url: &str, method: &str, path: &str) -> (String, String) {
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// Runs `node <script> <args>` in `tests/clients` (where tools/run-tests
/// installs the Node.js clients) and returns its stdout; fails the test,
/// with both outputs, if the script fails or the clients are missing.
pub fn run_node_client(script: &str, args: &[&str]) -> String {
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    assert!(
        clients
            .join("node_modules/@platformatic/kafka/package.json")
            .is_file(),
        "the Node.js clients are missing from tests/clients/node_modules: run tools/run-tests (it runs npm ci --prefix tests/clients)"
    );
    let started = Instant::now();
    let output = Command::new("node")
        .current_dir(&clients)
        .arg(script)
        .args(args)
        .output()
        .expect("node runs (tools/run-tests installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "node {script}: {:?} after {:?}\n--- stdout ---\n{stdout}\n--- stderr ---\n{}",
        output.status,
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Every batch in the segment files of `data_dir/<dir_name>`, one line each:
/// base offset, producer id and epoch, transactional/control flags, and each
/// record's key and value (as text where they are text). For diagnosing a
/// failed test from what the broker wrote.
pub fn dump_partition_dir(data_dir: &Path, dir_name: &str) -> String {
    let dir = data_dir.join(dir_name);
    let mut segments: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect(),
        Err(e) => return format!("{}: {e}", dir.display()),
    };
    segments.sort();
    let text = |b: &[u8]| match std::str::from_utf8(b) {
        Ok(s) => s.to_string(),
        Err(_) => format!("{b:02x?}"),
    };
    let mut out = String::new();
    for segment in segments {
        let bytes = std::fs::read(&segment).unwrap_or_default();
        let mut at = 0;
        while at + 61 <= bytes.len() {
            let length = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap());
            let length = usize::try_from(length).unwrap_or(0);
            if length < 49 || at + 12 + length > bytes.len() {
                out.push_str(&format!("  (torn or invalid batch at byte {at})\n"));
                break;
            }
            let mut batch = bytes::Bytes::copy_from_slice(&bytes[at..at + 12 + length]);
            match kafka_protocol::records::RecordBatchDecoder::decode(&mut batch) {
                Ok(set) => {
                    for r in set.records {
                        out.push_str(&format!(
                            "  {} pid {} epoch {} txn {} control {} key {} value {}\n",
                            r.offset,
                            r.producer_id,
                            r.producer_epoch,
                            r.transactional,
                            r.control,
                            r.key.as_deref().map_or("-".to_string(), text),
                            r.value.as_deref().map_or("-".to_string(), text),
                        ));
                    }
                }
                Err(e) => out.push_str(&format!("  (undecodable batch at byte {at}: {e})\n")),
            }
            at += 12 + length;
        }
    }
    out
}

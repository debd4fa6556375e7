//! Shared helpers for integration tests: run the real `sluice` binary as a child process,
//! wait on conditions with deadlines, and a real HTTP receiver on 127.0.0.1.

pub mod kafka_broker;
pub mod kinesalite;
pub mod moto;
pub mod pki;
pub mod postgres;
pub mod proxy;
pub mod pyiceberg;
pub mod tls_proxy;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A seed for a randomised test: the one in environment variable `var` (to replay a run's
/// printed seed), else the clock's nanoseconds.
pub fn seed_from(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes (then panics with `what`).
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Async flavour of [`wait_until`].
pub async fn wait_until_async(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The api port an agent's log says it listens on (`None` until it does). With
/// `address: 127.0.0.1:0` in the config the kernel picks the port as the agent binds, so no
/// other process can take it between a test choosing it and the agent binding it (as it can
/// with [`free_port`], once per restart).
pub fn api_port_in_log(stderr: &str) -> Option<u16> {
    stderr.lines().find_map(|line| {
        let (_, after) = line.split_once("api listening")?;
        let (_, address) = after.split_once("address=")?;
        address.trim().rsplit(':').next()?.parse().ok()
    })
}

/// A running agent. Killed on drop if still running.
pub struct Agent {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Agent {
    /// Writes `config` into `dir/sluice.yaml` and starts `sluice run` on it.
    pub fn start(dir: &Path, config: &str) -> Agent {
        Self::start_with(dir, config, Stdio::null(), Stdio::null())
    }

    pub fn start_with(dir: &Path, config: &str, stdin: Stdio, stdout: Stdio) -> Agent {
        Self::spawn(dir, config, stdin, stdout, None)
    }

    /// Starts the agent with `RLIMIT_NOFILE` (soft and hard) lowered to `max_open_files`, as
    /// `ulimit -n` would.
    pub fn start_with_open_file_limit(dir: &Path, config: &str, max_open_files: u64) -> Agent {
        Self::spawn(
            dir,
            config,
            Stdio::null(),
            Stdio::null(),
            Some(max_open_files),
        )
    }

    fn spawn(
        dir: &Path,
        config: &str,
        stdin: Stdio,
        stdout: Stdio,
        max_open_files: Option<u64>,
    ) -> Agent {
        let config_path = dir.join("sluice.yaml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_path = dir.join(format!(
            "stderr-{}.log",
            std::process::id() as u128 * 1000 + Instant::now().elapsed().as_nanos()
        ));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut command = sluice();
        command
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .env("SLUICE_LOG", "info")
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr);
        if let Some(limit) = max_open_files {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe, as pre_exec requires.
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
        let child = command.spawn().expect("sluice binary starts");
        Agent { child, stderr_path }
    }

    /// Kills the agent with SIGKILL (no drain, no checkpoint) and reaps it.
    pub fn kill9(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGKILL);
        }
        self.wait(Duration::from_secs(10));
    }

    /// Starts an agent reading `input` on stdin and waits for it to drain and exit 0.
    pub fn run_stdin(dir: &Path, config: &str, input: &str) -> Agent {
        use std::io::Write;
        let mut agent = Agent::start_with(dir, config, Stdio::piped(), Stdio::null());
        let mut stdin = agent.child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        let status = agent.wait(Duration::from_secs(90));
        assert!(
            status.success(),
            "exit {status:?}; stderr:\n{}",
            agent.stderr()
        );
        agent
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Polls `condition` every 20 ms until it holds; panics with `what` and the agent's log if
    /// `timeout` passes or the agent exits first (a dead agent is reported at once, with why).
    pub fn wait_while_running(
        &mut self,
        timeout: Duration,
        what: &str,
        mut condition: impl FnMut(&Agent) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition(self) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "sluice exited ({status}) while waiting for: {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (bounded) for exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        self.wait(timeout)
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "sluice did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn read_stdout(&mut self) -> String {
        let mut out = String::new();
        if let Some(stdout) = self.child.stdout.as_mut() {
            stdout.read_to_string(&mut out).unwrap();
        }
        out
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until something accepts TCP connections on `port`.
pub fn wait_for_port(port: u16) {
    wait_until(
        Duration::from_secs(20),
        &format!("port {port} to accept connections"),
        || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
    );
}

/// How the test receiver answers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    Accept = 0,
    /// 503 Service Unavailable, nothing recorded.
    Unavailable = 1,
    /// Hold every request until the mode changes.
    Hang = 2,
    /// 400 Bad Request, nothing recorded.
    Reject = 3,
}

/// A real HTTP server on 127.0.0.1 that records the NDJSON lines POSTed to it.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<Mutex<Vec<HeaderMap>>>,
    mode: Arc<AtomicU8>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let mode = Arc::new(AtomicU8::new(Mode::Accept as u8));
        let state = (lines.clone(), requests.clone(), mode.clone());
        let app = Router::new().route("/", post(receive)).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            addr,
            lines,
            requests,
            mode,
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

type ReceiverState = (
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<Vec<HeaderMap>>>,
    Arc<AtomicU8>,
);

async fn receive(
    State((lines, requests, mode)): State<ReceiverState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    loop {
        match mode.load(Ordering::SeqCst) {
            0 => break,
            1 => return StatusCode::SERVICE_UNAVAILABLE,
            3 => return StatusCode::BAD_REQUEST,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let body = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some("zstd") => zstd::decode_all(&body[..]).unwrap(),
        _ => body.to_vec(),
    };
    let text = String::from_utf8(body).unwrap();
    let mut lines = lines.lock().unwrap();
    lines.extend(text.lines().filter(|l| !l.is_empty()).map(String::from));
    requests.lock().unwrap().push(headers);
    StatusCode::OK
}

/// Fetches a URL's body with a blocking HTTP/1.1 GET (no client library needed). Status 0
/// when nothing listens.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
        return (0, String::new()); // not listening (yet)
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The agent's "events discarded" warnings (one per component and reason at first, then at
/// most one per interval), from its stderr.
pub fn discard_warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("events discarded"))
        .collect()
}

/// The sum of the `/metrics` samples of `name` whose labels contain `label`, from the agent's
/// api on `api_port` (0 while it does not answer). A component's named outputs (`output="..."`,
/// a sink's dead letters) count only when `label` names one.
pub fn metric(api_port: u16, name: &str, label: &str) -> f64 {
    let (_, text) = http_get(([127, 0, 0, 1], api_port).into(), "/metrics");
    let wants_output = label.contains("output=");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter(|l| wants_output || !l.contains("output=\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

//! moto's server (an AWS emulator speaking the real S3, Kinesis and Firehose HTTP APIs) on
//! 127.0.0.1, one per test, behind a [`Proxy`] so a test can cut the network while moto keeps
//! its state. `scripts/moto.sh` installs it into a cached virtualenv and `scripts/test.sh`
//! hands it over as `SLUICE_MOTO_SERVER`. Included with `#[path]` (with `proxy.rs` as the
//! crate's `proxy` module).

use super::proxy::Proxy;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// moto_server, or `None` when the caller opted out with `SLUICE_SKIP_MOTO=1`. Panics (fails
/// loudly) when it is missing without the opt-out.
pub fn moto_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_MOTO_SERVER") {
        return Some(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cache/sluice/moto-5.2.5/bin/moto_server");
        if path.exists() {
            return Some(path);
        }
    }
    if std::env::var("SLUICE_SKIP_MOTO").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_MOTO=1: skipping a test against the AWS emulator");
        return None;
    }
    panic!(
        "moto_server (the AWS emulator) not found: run scripts/test.sh (which installs it with \
         scripts/moto.sh), set SLUICE_MOTO_SERVER=/path/to/moto_server, or set \
         SLUICE_SKIP_MOTO=1 to skip these tests locally"
    );
}

pub struct Moto {
    child: Child,
    proxy: Proxy,
}

/// moto_server with its web server made single-threaded: one request at a time.
const SERIAL: &str = "import moto.server as m, werkzeug.serving as w; \
    m.run_simple = lambda *a, **k: w.run_simple(*a, **{**k, 'threaded': False}); m.main()";

impl Moto {
    pub fn start() -> Option<Moto> {
        Self::spawn(false)
    }

    /// moto answering one request at a time. Its threaded server does not make a DynamoDB
    /// conditional write atomic (two concurrent `UpdateItem`s with the same condition both
    /// succeed, seen here), which DynamoDB guarantees and shard leases rely on.
    pub fn start_serial() -> Option<Moto> {
        Self::spawn(true)
    }

    fn spawn(serial: bool) -> Option<Moto> {
        let binary = moto_binary()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = if serial {
            let mut command = Command::new(binary.with_file_name("python"));
            command.args(["-c", SERIAL]);
            command
        } else {
            Command::new(&binary)
        };
        let mut child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("moto_server exited at start with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Moto {
            child,
            proxy: Proxy::start(port),
        })
    }

    /// The endpoint clients use (through the proxy).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.proxy.port)
    }

    /// Cuts (false) or restores (true) the network to the emulator.
    pub fn set_up(&self, up: bool) {
        self.proxy.set_up(up);
    }

    /// YAML lines that point a component at this emulator with test credentials.
    pub fn yaml(&self, indent: &str) -> String {
        format!(
            "{indent}endpoint: {}\n{indent}region: us-east-1\n{indent}auth:\n{indent}  access_key_id: test\n{indent}  secret_access_key: test\n",
            self.endpoint()
        )
    }

    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::from(&self.sdk_config().await)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub async fn kinesis(&self) -> aws_sdk_kinesis::Client {
        aws_sdk_kinesis::Client::new(&self.sdk_config().await)
    }

    pub async fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config().await)
    }

    pub async fn firehose(&self) -> aws_sdk_firehose::Client {
        aws_sdk_firehose::Client::new(&self.sdk_config().await)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

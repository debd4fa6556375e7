//! kinesalite (npm; a Kinesis emulator that implements SplitShard and closes the parent
//! shard, which moto does not) on 127.0.0.1, one per test, started with
//! `node scripts/kinesalite-server.js PORT`. `scripts/test.sh` installs it with
//! `scripts/kinesalite.sh` and hands over its node_modules as `SLUICE_KINESALITE_MODULES`.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// kinesalite's node_modules, or `None` with `SLUICE_SKIP_KINESALITE=1`; panics (fails
/// loudly) when missing without the opt-out.
fn modules() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_KINESALITE_MODULES") {
        return Some(PathBuf::from(path));
    }
    if let Some(home) = std::env::var_os("HOME") {
        let path = PathBuf::from(home).join(".cache/sluice/kinesalite-3.3.3/node_modules");
        if path.join("kinesalite").exists() {
            return Some(path);
        }
    }
    if std::env::var("SLUICE_SKIP_KINESALITE").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_KINESALITE=1: skipping a test against kinesalite");
        return None;
    }
    panic!(
        "kinesalite not found: run scripts/test.sh (which installs it with scripts/kinesalite.sh), \
         set SLUICE_KINESALITE_MODULES=/path/to/node_modules, or set SLUICE_SKIP_KINESALITE=1 \
         to skip these tests locally"
    );
}

pub struct Kinesalite {
    child: Child,
    port: u16,
}

impl Kinesalite {
    pub fn start() -> Option<Kinesalite> {
        let modules = modules()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kinesalite-server.js");
        let mut child = Command::new("node")
            .arg(script)
            .arg(port.to_string())
            .env("NODE_PATH", modules)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (kinesalite needs Node.js)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("kinesalite exited at start with {status}");
            }
            assert!(
                Instant::now() < deadline,
                "kinesalite did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Kinesalite { child, port })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// YAML lines that point a component at this emulator.
    pub fn yaml(&self, indent: &str) -> String {
        format!(
            "{indent}endpoint: {}\n{indent}region: us-east-1\n{indent}auth:\n{indent}  access_key_id: test\n{indent}  secret_access_key: test\n",
            self.endpoint()
        )
    }

    pub async fn kinesis(&self) -> aws_sdk_kinesis::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .load()
            .await;
        aws_sdk_kinesis::Client::new(&config)
    }
}

impl Drop for Kinesalite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A real PostgreSQL server for one test: `initdb` into a temporary directory and `pg_ctl
//! start` on 127.0.0.1 with an ephemeral port, as the `postgres` user when the tests run as
//! root (the server refuses root). `scripts/postgres.sh` finds (or installs) the programs and
//! `scripts/test.sh` hands their directory over as `SLUICE_PG_BIN`. Stopped on drop.
//! Included with `#[path]`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The directory of initdb and pg_ctl, or `None` when the caller opted out with
/// `SLUICE_SKIP_POSTGRES=1`. Panics (fails loudly) when missing without the opt-out.
pub fn postgres_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|d| d.join("initdb").exists())
            .collect();
        dirs.sort();
        if let Some(dir) = dirs.pop() {
            return Some(dir);
        }
    }
    if std::env::var("SLUICE_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SLUICE_SKIP_POSTGRES=1: skipping a test against PostgreSQL");
        return None;
    }
    panic!(
        "PostgreSQL's initdb/pg_ctl not found: run scripts/test.sh (which installs them with \
         scripts/postgres.sh), set SLUICE_PG_BIN=/usr/lib/postgresql/15/bin, or set \
         SLUICE_SKIP_POSTGRES=1 to skip these tests locally"
    );
}

pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    runtime: tokio::runtime::Runtime,
}

/// Runs a server program, as `postgres` when this process is root.
fn server_command(program: &Path) -> Command {
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Postgres {
    pub fn start() -> Option<Postgres> {
        Self::start_with(None)
    }

    /// A server that accepts only TLS connections, with `crt` and `key` (PEM) as its
    /// certificate.
    pub fn start_tls_only(crt: &Path, key: &Path) -> Option<Postgres> {
        Self::start_with(Some((crt, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Option<Postgres> {
        let bin = postgres_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg")
            .tempdir_in("/tmp")
            .unwrap();
        if unsafe { libc::geteuid() } == 0 {
            let status = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the data directory failed");
        }
        let data = dir.path().join("data");
        let output = server_command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let port = super::free_port();
        let mut options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=50",
            dir.path().display()
        );
        if let Some((crt, key)) = tls {
            // The server wants its key private to its own user.
            let (server_crt, server_key) =
                (dir.path().join("server.crt"), dir.path().join("server.key"));
            std::fs::copy(crt, &server_crt).unwrap();
            std::fs::copy(key, &server_key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&server_key, std::fs::Permissions::from_mode(0o600)).unwrap();
            if unsafe { libc::geteuid() } == 0 {
                let status = Command::new("chown")
                    .args(["postgres"])
                    .arg(&server_crt)
                    .arg(&server_key)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                server_crt.display(),
                server_key.display()
            ));
            // Only TLS connections over TCP; the local socket stays for pg_ctl.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
        }
        let output = server_command(&bin.join("pg_ctl"))
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-w", "-t", "60", "-l"])
            .arg(dir.path().join("server.log"))
            .arg("start")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "pg_ctl start failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Some(Postgres {
            bin,
            dir,
            port,
            runtime,
        })
    }

    /// The URL the agent and the test connect with.
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The test's own connection string: the server's local socket, which needs no TLS.
    fn local(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// Runs SQL statements (no results).
    pub fn execute(&self, sql: &str) {
        let url = self.local();
        self.runtime.block_on(async {
            let client = connect(&url).await;
            client
                .batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        });
    }

    /// Runs a query; every value as text (NULL as `None`).
    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let url = self.local();
        self.runtime.block_on(async {
            let client = connect(&url).await;
            let messages = client
                .simple_query(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => Some(
                        (0..row.len())
                            .map(|i| row.get(i).map(str::to_string))
                            .collect(),
                    ),
                    _ => None,
                })
                .collect()
        })
    }

    /// One integer from a query, e.g. a count.
    pub fn scalar(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        rows.first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_else(|| panic!("{sql}: no value"))
            .parse()
            .unwrap()
    }

    /// Ends every connection the agent holds (its application_name is `sluice`), as an
    /// administrator or a failover would; returns how many.
    pub fn terminate_agent_connections(&self) -> i64 {
        self.scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = 'sluice' AND pid <> pg_backend_pid()",
        )
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let mut tries = 0;
    loop {
        match tokio_postgres::connect(url, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                return client;
            }
            Err(e) if tries < 50 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = server_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

//! http_server security over real sockets on 127.0.0.1: mutual TLS with certificates made in
//! the test (rcgen), bearer and basic auth, the connection limit, the header size limit and
//! slow (slowloris) clients. Clients are reqwest (rustls) and raw TCP streams.

use crate::common;
use crate::common::pki;
use crate::common::{free_port, http_get, wait_for_port, wait_until, Agent};
use pki::Pki;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn server_config(dir: &Path, port: u16, api: u16, extra: &str) -> String {
    format!(
        "data_dir: {data}\napi:\n  enabled: true\n  address: 127.0.0.1:{api}\nsources:\n  in:\n    type: http_server\n    address: 127.0.0.1:{port}\n{extra}sinks:\n  out:\n    type: file\n    inputs: [in]\n    path: {out}\n",
        data = dir.join("data").display(),
        out = dir.join("out.ndjson").display()
    )
}

fn lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("out.ndjson"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn errors(api: u16, error_type: &str) -> f64 {
    let (_, metrics) = http_get(([127, 0, 0, 1], api).into(), "/metrics");
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("component_errors_total")
                && l.contains("component_id=\"in\"")
                && l.contains(&format!("error_type=\"{error_type}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The http_server's `open_connections` gauge.
fn open_connections(api: u16) -> f64 {
    let (_, metrics) = http_get(([127, 0, 0, 1], api).into(), "/metrics");
    metrics
        .lines()
        .filter(|l| l.starts_with("open_connections") && l.contains("component_id=\"in\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn client(dir: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = std::fs::read(dir.join("ca.crt")).unwrap();
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .timeout(Duration::from_secs(5));
    if let Some(name) = identity {
        let mut pem = std::fs::read(dir.join(format!("{name}.crt"))).unwrap();
        pem.extend(std::fs::read(dir.join(format!("{name}.key"))).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refuses_clients_without_a_valid_certificate_and_serves_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Pki::ca(dir.path(), "ca");
    Pki::leaf(dir.path(), "server", &ca);
    Pki::leaf(dir.path(), "client", &ca);
    let rogue = Pki::ca(dir.path(), "rogue-ca");
    Pki::leaf(dir.path(), "intruder", &rogue);
    Pki::leaf_with(dir.path(), "expired", &ca, |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let (port, api) = (free_port(), free_port());
    let tls = format!(
        "    tls:\n      crt_file: {d}/server.crt\n      key_file: {d}/server.key\n      ca_file: {d}/ca.crt\n",
        d = dir.path().display()
    );
    let mut agent = Agent::start(dir.path(), &server_config(dir.path(), port, api, &tls));
    wait_for_port(port);
    let url = format!("https://localhost:{port}/");

    let anonymous = client(dir.path(), None)
        .post(&url)
        .body("{\"n\":1}\n")
        .send()
        .await;
    assert!(anonymous.is_err(), "no client certificate: {anonymous:?}");
    let intruder = client(dir.path(), Some("intruder"))
        .post(&url)
        .body("{\"n\":2}\n")
        .send()
        .await;
    assert!(
        intruder.is_err(),
        "a certificate from another CA: {intruder:?}"
    );
    let plain = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/"))
        .body("{\"n\":3}\n")
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP on a TLS port"
    );

    let valid = client(dir.path(), Some("client"))
        .post(&url)
        .body("{\"n\":4}\n")
        .send()
        .await
        .unwrap();
    assert_eq!(
        valid.status(),
        200,
        "the server is still up and serves a valid client"
    );
    wait_until(WAIT, "the event", || lines(dir.path()).len() == 1);
    assert!(lines(dir.path())[0].contains("\\\"n\\\":4"));
    assert!(errors(api, "tls_handshake_failed") >= 3.0);
    assert!(agent.terminate(WAIT).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_takes_the_configured_token_or_user_and_answers_401_alike_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (port, api) = (free_port(), free_port());
    let token = "tok-3f9a8c1d2e";
    let auth = "    auth:\n      bearer_tokens: [\"${INGEST_TOKEN}\"]\n      basic:\n        - username: shipper\n          password: \"${INGEST_PASSWORD}\"\n";
    let config = server_config(dir.path(), port, api, auth);
    std::fs::write(dir.path().join("sluice.yaml"), &config).unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = common::sluice()
        .arg("run")
        .arg("--config")
        .arg(dir.path().join("sluice.yaml"))
        .env("INGEST_TOKEN", token)
        .env("INGEST_PASSWORD", "pa55-w0rd")
        .env("SLUICE_LOG", "debug")
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_for_port(port);
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    let send = |request: reqwest::RequestBuilder| async move {
        let response = request.body("{\"n\":1}\n").send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    };
    let refused = [
        send(http.post(&url)).await,
        send(http.post(&url).bearer_auth("tok-3f9a8c1d2f")).await,
        send(http.post(&url).basic_auth("shipper", Some("pa55-w0rD"))).await,
        send(http.post(&url).basic_auth("other", Some("pa55-w0rd"))).await,
    ];
    for (status, body) in &refused {
        assert_eq!(
            (*status, body.as_str()),
            (401, "unauthorized\n"),
            "no hint which part was wrong"
        );
    }
    assert_eq!(send(http.post(&url).bearer_auth(token)).await.0, 200);
    assert_eq!(
        send(http.post(&url).basic_auth("shipper", Some("pa55-w0rd")))
            .await
            .0,
        200
    );
    wait_until(WAIT, "two events", || lines(dir.path()).len() == 2);
    assert_eq!(errors(api, "unauthorized"), 4.0);
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap();
    assert!(
        !log.contains(token) && !log.contains("pa55-w0rd"),
        "secrets never logged"
    );
}

/// Reads what the server sends until it closes the connection (bounded by the socket's
/// read timeout); `None` when it stays open past that.
fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&out).into_owned())
            }
            Err(_) => return None,
        }
    }
}

#[test]
fn connection_and_header_limits_and_slow_clients_get_clear_answers_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let (port, api) = (free_port(), free_port());
    // The slow clients hold their slots for header_timeout_secs: long enough to see both held
    // and try a third connection even on a loaded machine.
    let limits = "    max_connections: 2\n    header_timeout_secs: 3\n    max_header_bytes: 1024\n";
    let mut agent = Agent::start(dir.path(), &server_config(dir.path(), port, api, limits));
    wait_for_port(port);
    // A complete exchange first (404 on another path): the server is serving, and the
    // probe connection of wait_for_port (closed at once) has left its slot.
    assert_eq!(http_get(([127, 0, 0, 1], port).into(), "/elsewhere").0, 404);
    wait_until(
        WAIT,
        "the finished connections to leave their slots",
        || open_connections(api) == 0.0,
    );

    // Two slowloris clients: a request line, then nothing.
    let mut slow: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    wait_until(WAIT, "both slow clients to hold a slot", || {
        open_connections(api) >= 2.0
    });
    let mut third = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let answer = read_until_closed(&mut third, Duration::from_secs(5)).expect("closed");
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the limit: {answer}"
    );
    assert!(errors(api, "connection_limit") >= 1.0);

    // The slow ones are cut off once the header deadline passes, freeing their slots.
    let started = Instant::now();
    for stream in &mut slow {
        assert!(
            read_until_closed(stream, Duration::from_secs(5)).is_some(),
            "a slow client is disconnected"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(5));

    // Oversized headers: 431, and the server still serves a normal request afterwards.
    let mut big = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{{\"n\":1}}",
        "y".repeat(2000)
    );
    big.write_all(request.as_bytes()).unwrap();
    let answer = read_until_closed(&mut big, Duration::from_secs(5)).expect("answered");
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert!(errors(api, "headers_too_large") >= 1.0);

    let mut ok = TcpStream::connect(("127.0.0.1", port)).unwrap();
    ok.write_all(
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\nConnection: close\r\n\r\n{\"n\":2}",
    )
    .unwrap();
    let answer = read_until_closed(&mut ok, Duration::from_secs(5)).expect("answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_until(WAIT, "the event", || lines(dir.path()).len() == 1);
    assert!(agent.terminate(WAIT).success());
}

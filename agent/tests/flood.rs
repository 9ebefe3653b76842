//! The agent under a connection flood, with real sockets against the real
//! binary (run with an open-file limit of 1,024, as on a stock node): 2,000
//! connections that send part of a request (or, on the TLS listener, nothing
//! at all) and stall must not keep an authorized `/v1/sync` from being
//! answered; a stalled connection is closed after the header-read timeout.
//! Every wait is bounded so a regression fails instead of hanging.

mod common;

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::AgentProcess;

/// Slow connections opened by each flood.
const FLOOD: usize = 2000;
/// The open-file limit the agent runs with.
const AGENT_OPEN_FILES: u32 = 1024;
/// Longest wait for the authorized request while the flood is held.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);

/// Open `n` connections to `addr`, each sending `partial` (may be empty),
/// and keep them open. Connects that fail or hang are counted, not fatal.
fn flood(addr: &str, n: usize, partial: &[u8]) -> (Vec<TcpStream>, usize) {
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for _ in 0..n {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(mut s) => {
                let _ = s.write_all(partial);
                held.push(s);
            }
            Err(_) => failed += 1,
        }
    }
    (held, failed)
}

fn sync_body(path: &str) -> Value {
    json!({"items": [{
        "secret": {"name": "flood", "provider": "custom", "values": {"token": "v"}},
        "path": path,
    }]})
}

fn config_file(dir: &Path, yaml: &str) -> std::path::PathBuf {
    let path = dir.join("agent.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The agent, its home and the address it listens on.
struct Fixture {
    _home: tempfile::TempDir,
    home: std::path::PathBuf,
    agent: AgentProcess,
    addr: String,
}

fn start(yaml: &str) -> Fixture {
    // The test holds 2,000 sockets itself.
    agent::raise_fd_limit();
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join(".rh/agent");
    let config = config_file(home.path(), yaml);
    let agent = AgentProcess::spawn_with(
        home.path(),
        &state,
        &home.path().join("agent.stderr"),
        &[OsStr::new("--config"), config.as_os_str()],
        Some(AGENT_OPEN_FILES),
    );
    let addr = agent.url.trim_start_matches("http://").to_owned();
    Fixture {
        home: home.path().to_owned(),
        _home: home,
        agent,
        addr,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_authorized_sync_is_answered_under_2000_slow_connections() {
    let f = start("header_read_timeout_secs: 60\n");
    let addr = f.addr.clone();
    let (held, failed) = tokio::task::spawn_blocking(move || {
        flood(
            &addr,
            FLOOD,
            b"POST /v1/sync HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Ty",
        )
    })
    .await
    .unwrap();
    eprintln!("slow connections: {} open, {failed} failed", held.len());
    let client = reqwest::Client::builder()
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap();
    let t0 = Instant::now();
    let resp = sync_while_held(&f, &client, &f.agent.url, "~/.flood/plain.json", "the sync").await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "written", "{body}");
    eprintln!("answered in {:?}", t0.elapsed());
    let text = std::fs::read_to_string(f.home.join(".flood/plain.json")).unwrap();
    assert!(text.contains("\"token\""));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_is_closed_after_the_header_read_timeout() {
    let f = start("header_read_timeout_secs: 1\n");
    let (read, _) = until_closed(&f.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n");
    assert!(
        read.is_ok(),
        "the stalled connection was not closed: {read:?}"
    );
    // An idle keep-alive connection is closed too.
    let (read, buf) = until_closed(&f.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(read.is_ok(), "the idle connection was not closed: {read:?}");
    assert!(String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 200"));
}

/// Send `request` (nothing when empty) on a new connection to `addr` and
/// read until the agent closes it (bounded: the agent closes it long before
/// this read times out): the read's result and what it read.
fn until_closed(addr: &str, request: &[u8]) -> (std::io::Result<usize>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(request).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = Vec::new();
    let read = s.read_to_end(&mut buf);
    (read, buf)
}

/// A sync writing `path`, sent to `base` with `client` while a flood is
/// held: its answer, once its status is checked (200); `what` names the
/// request in a failure to answer.
async fn sync_while_held(
    f: &Fixture,
    client: &reqwest::Client,
    base: &str,
    path: &str,
    what: &str,
) -> reqwest::Response {
    let resp = client
        .post(format!("{base}/v1/sync"))
        .bearer_auth(&f.agent.token)
        .json(&sync_body(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what} is not answered while the flood is held: {e}"));
    assert_eq!(resp.status().as_u16(), 200);
    resp
}

/// The TLS agent, or `None` when openssl is not installed.
fn start_tls(extra_yaml: &str) -> Option<(Fixture, reqwest::Certificate)> {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::make_cert(dir.path())?;
    let yaml = format!(
        "tls: {{cert: {}, key: {}}}\n{extra_yaml}",
        cert.display(),
        key.display()
    );
    let f = start(&yaml);
    let root = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    std::mem::forget(dir);
    Some((f, root))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_listener_answers_under_2000_connections_that_never_handshake() {
    let Some((f, root)) = start_tls("header_read_timeout_secs: 60\n") else {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    };
    let addr = f.addr.clone();
    let (held, failed) = tokio::task::spawn_blocking(move || flood(&addr, FLOOD, b""))
        .await
        .unwrap();
    eprintln!("idle TLS connections: {} open, {failed} failed", held.len());
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .timeout(ANSWER_WITHIN)
        .build()
        .unwrap();
    let base = format!("https://{}", f.addr);
    sync_while_held(&f, &client, &base, "~/.flood/tls.json", "the TLS sync").await;
    assert!(f.home.join(".flood/tls.json").is_file());
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_handshakes_is_closed_after_the_timeout() {
    let Some((f, _root)) = start_tls("header_read_timeout_secs: 1\n") else {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    };
    let (read, _) = until_closed(&f.addr, b"");
    assert!(
        read.is_ok(),
        "the idle TLS connection was not closed: {read:?}"
    );
}

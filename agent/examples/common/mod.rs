//! What the agent benchmarks (`agent_bench`, `credentials_bench`) share:
//! starting the agent binary on loopback in a temp home, its CPU time, and
//! percentiles. Benchmark code only: never part of a built agent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// CPU time (user + system) the process has used so far, in ms, from
/// `/proc/PID/stat` (clock ticks at 100 Hz). Steadier than wall time when
/// other work shares the cores: it counts only this process's own work.
pub(crate) fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    (ticks(11) + ticks(12)) * 10.0
}

/// The value at fraction `p` (0.5: the median) of sorted samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn healthz(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

/// A benchmark's setup: the agent binary (its one argument; `usage: NAME
/// AGENT_BINARY` otherwise), a temp home, and the agent's state directory
/// in it.
pub(crate) fn bench_args(name: &str) -> (String, tempfile::TempDir, PathBuf) {
    let bin = std::env::args()
        .nth(1)
        .unwrap_or_else(|| panic!("usage: {name} AGENT_BINARY"));
    let home = tempfile::tempdir().unwrap();
    let state = home.path().join(".rh/agent");
    (bin, home, state)
}

/// Start `bin serve` on 127.0.0.1:0 with `home` (and `config`, written to
/// `home/agent.yaml`, when given); wait, polling every 0.5 ms, until it
/// wrote its address and answers `/healthz`. The child, its URL and its
/// API token.
pub(crate) fn start_agent(bin: &str, home: &Path, config: Option<&str>) -> (Child, String, String) {
    let state = home.join(".rh/agent");
    let _ = std::fs::remove_file(state.join("agent.addr"));
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--home"])
        .arg(home);
    if let Some(config) = config {
        let config_path = home.join("agent.yaml");
        std::fs::write(&config_path, config).unwrap();
        cmd.arg("--config").arg(&config_path);
    }
    let child = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let addr = loop {
        if let Ok(a) = std::fs::read_to_string(state.join("agent.addr")) {
            if a.ends_with('\n') && healthz(a.trim()) {
                break a.trim().to_owned();
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "agent did not start"
        );
        std::thread::sleep(Duration::from_micros(500));
    };
    let token = std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    (child, format!("http://{addr}"), token)
}

/// `POST /v1/sync` of `body` to the agent at `base` with its API token:
/// the answer's JSON, asserting a success.
pub(crate) async fn sync(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    body: &serde_json::Value,
) -> serde_json::Value {
    let r = client
        .post(format!("{base}/v1/sync"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "/v1/sync answered {}", r.status());
    r.json().await.unwrap()
}

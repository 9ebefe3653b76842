//! Helpers for the workload identity tests (`federation*.rs`): the Python
//! protocol peers (tests/data/federation/peers.py, moto's STS) started as
//! processes killed on drop, a pulling agent node with its identity files,
//! a dev server with enrolled pull clusters, `cluster federate`, PyJWT's
//! verdict on a token, and the check that no token reaches a log. Never
//! prints a token.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::vault_common::{free_port, DevServer, Home};

pub const PEERS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/federation/peers.py"
);
pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/gpu-nodes";
pub const GCP_AUD: &str =
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/rh/providers/gpu";
pub const GCP_SA: &str = "trainer@proj-1.iam.gserviceaccount.com";
pub const AZ_CLIENT: &str = "0b6e8f4e-54b7-4c3b-9d0c-2d3b5d1f7a11";
pub const AZ_TENANT: &str = "contoso.onmicrosoft.com";

/// The Python interpreter that has every peer library, or `None` after a
/// skip message (a failure with `CI` set).
pub fn python() -> Option<PathBuf> {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import jwt, cryptography, boto3, moto.server, awscli, google.auth, azure.identity, sys; \
             print(sys.executable)",
        ])
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            Some(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        }
        _ => {
            let what =
                "the Python peers (pip install PyJWT cryptography 'moto[server]' boto3 awscli \
                        google-auth azure-identity)";
            assert!(
                std::env::var_os("CI").is_none(),
                "{what} are missing and CI is set"
            );
            eprintln!("SKIPPED: {what} are missing");
            None
        }
    }
}

/// A helper process, killed on drop.
pub use test_support::KillOnDrop as Proc;

/// Start a peer server and wait for its "ready" line.
pub fn start_peer(py: &Path, args: &[&str], log: &Path) -> Proc {
    let mut child = Command::new(py)
        .arg(PEERS)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("start a peer");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "ready",
        "peer {args:?}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    Proc(child)
}

/// moto's server (`python -m moto.server`) on a free port, once it accepts.
pub fn start_moto(py: &Path, dir: &Path) -> (Proc, String) {
    let port = free_port();
    let child = Command::new(py)
        .args(["-m", "moto.server", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("moto.log")).unwrap())
        .spawn()
        .expect("start moto");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (proc, format!("http://127.0.0.1:{port}"))
}

/// A pulling agent on its own home, with extra config and environment.
pub struct Node {
    pub home: tempfile::TempDir,
    pub port: u16,
    pub _child: Proc,
}

impl Node {
    pub fn start(bundle: &Path, config: &str, env: &[(&str, String)]) -> Node {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let file = home.path().join("agent.yaml");
        std::fs::write(
            &file,
            format!("poll_interval_secs: 1\nheartbeat_secs: 2\npull_boot_wait_secs: 10\n{config}"),
        )
        .unwrap();
        let mut cmd = crate::nodes::pull_agent_command(home.path(), port, &file, bundle);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = Proc(cmd.spawn().expect("start the agent"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the pulling agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Node {
            home,
            port,
            _child: child,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    pub fn identity(&self, file: &str) -> PathBuf {
        self.path(".rh/agent/identity").join(file)
    }

    pub fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let token = std::fs::read_to_string(self.path(".rh/agent/token")).unwrap();
        test_support::block_on(async {
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = reqwest::Client::new()
                .request(method, format!("http://127.0.0.1:{}{path}", self.port))
                .bearer_auth(token.trim())
                .timeout(Duration::from_secs(300));
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    }

    /// Run argv in env `base_env`: exit code and stdout (stderr shown on failure).
    pub fn run(&self, argv: &[&str], timeout_secs: u64) -> (i64, String) {
        let (status, body) = self.request(
            "POST",
            "/v1/envs/base_env/run",
            Some(json!({ "argv": argv, "timeout_secs": timeout_secs })),
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let code = v["exit_code"].as_i64().unwrap();
        assert_eq!(code, 0, "{argv:?} in base_env: {}", v["stderr"]);
        (code, v["stdout"].as_str().unwrap().to_owned())
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.request("GET", "/metrics", None);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    /// Wait until every file exists.
    pub fn wait_files(&self, files: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !files.iter().all(|f| self.identity(f).exists()) {
            assert!(
                Instant::now() < deadline,
                "no identity files: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A bao dev server with AppRole, alice logged in, pull cluster `cluster`
/// enrolled with `n` bundles.
pub fn setup(clusters: &[&str], n: usize) -> Option<(DevServer, Home, tempfile::TempDir, PathBuf)> {
    let py = python()?;
    let (server, home) = DevServer::with_approle("alice")?;
    let out = tempfile::tempdir().unwrap();
    for c in clusters {
        home.ok(&["cluster", "add", c, "--pull"]);
        home.ok(&[
            "cluster",
            "enroll",
            c,
            "--out",
            out.path().join(c).to_str().unwrap(),
            "--nodes",
            &n.to_string(),
        ]);
    }
    Some((server, home, out, py))
}

pub fn federate(home: &Home, args: &[&str]) -> Value {
    let mut all = vec!["cluster", "federate"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&home.ok(&all).stdout).unwrap()
}

/// PyJWT's verdict on the token in `file`: its claims.
pub fn verify(py: &Path, file: &Path, jwks: &str, fed: &Value, aud: &str, cluster: &str) -> Value {
    let out = test_support::run_ok(
        Command::new(py)
            .arg(PEERS)
            .arg("verify")
            .arg(file)
            .args(["--jwks", jwks, "--aud", aud, "--cluster", cluster])
            .args(["--issuer", fed["issuer"].as_str().unwrap()])
            .args(["--sub", fed["subject"].as_str().unwrap()]),
    );
    out.json()
}

pub fn jwks_url(server: &DevServer) -> String {
    format!("{}/v1/identity/oidc/.well-known/keys", server.url)
}

pub fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// No token of `node` in `texts`.
pub fn assert_no_token(node: &Node, texts: &[(&str, String)]) {
    for file in ["aws.jwt", "gcp.jwt", "azure.jwt"] {
        let Ok(token) = std::fs::read_to_string(node.identity(file)) else {
            continue;
        };
        // Any of its three parts would do: the signature is the secret bit.
        let sig = token.rsplit('.').next().unwrap();
        for (what, text) in texts {
            assert!(!text.contains(sig), "a token leaked into {what}");
        }
    }
}

pub fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

//! Helpers for the fleet-mode tests (`fleet*.rs`): a TCP relay the test
//! can cut between the agents and the store, pull agents started on a
//! bundle (killed on drop), enrolling a cluster, the store read as root,
//! and waiting for a cluster to converge. Holds fixture values only as the
//! tests' constants; never prints them.

#![allow(dead_code, unreachable_pub)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Secret;
use serde_json::{json, Value};

use crate::vault_common::{mode, raw, DevServer, Home, ROOT_TOKEN};

pub const V1: &str = "fleet-file-value-1a2b3c";
pub const V2: &str = "fleet-file-value-2d4e6f";
pub const V3: &str = "fleet-file-value-3a7b9c";
pub const V_ENV: &str = "fleet-env-value-77aa11";
pub const V_PERSONAL: &str = "personal-value-9f8e7d";
pub const TOKEN_FILE: &str = ".config/mytool/token.json";

/// A TCP relay to the store that the test can cut and restore (same port).
/// It keeps the request lines (`GET /v1/... HTTP/1.1`) it relayed.
pub struct Relay {
    pub port: u16,
    pub target: u16,
    pub up: Arc<AtomicBool>,
    pub conns: Arc<Mutex<Vec<TcpStream>>>,
    pub requests: Arc<Mutex<Vec<String>>>,
}

/// Copy `from` to `to`; with `seen`, keep the HTTP request lines that pass.
pub fn relay_copy(mut from: TcpStream, mut to: TcpStream, seen: Option<Arc<Mutex<Vec<String>>>>) {
    let Some(seen) = seen else {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        return;
    };
    let mut buf = [0u8; 16 * 1024];
    let mut line = Vec::new();
    // Each request line is kept before it is passed on: once the store has
    // answered, the test finds it in `seen` (kept after the write, a line
    // was sometimes not there yet when the controller had already exited).
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if let Some(request) = request_line(&text) {
                    seen.lock().unwrap().push(request.to_owned());
                }
                line.clear();
            } else if line.len() < 4096 {
                line.push(b);
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

/// The HTTP request line in `text`: on a kept-alive connection a request
/// line follows the previous request's body with no newline between them
/// (`{"data":...}GET /v1/... HTTP/1.1`), so it is found where its method
/// starts, not only at the start of the line.
fn request_line(text: &str) -> Option<&str> {
    if !text.ends_with(" HTTP/1.1") && !text.ends_with(" HTTP/1.0") {
        return None;
    }
    ["GET /", "POST /", "PUT /", "LIST /", "DELETE /"]
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .map(|at| &text[at..])
}

impl Relay {
    pub fn start(target: u16) -> Relay {
        let relay = Relay {
            port: crate::vault_common::free_port(),
            target,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(vec![])),
            requests: Arc::new(Mutex::new(vec![])),
        };
        relay.open();
        relay
    }

    /// A relay to `server` (its port, from its URL).
    pub fn to(server: &DevServer) -> Relay {
        Relay::start(server.url.rsplit(':').next().unwrap().parse().unwrap())
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn open(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, target) = (self.up.clone(), self.conns.clone(), self.target);
        let requests = self.requests.clone();
        std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                            continue;
                        };
                        let mut all = conns.lock().unwrap();
                        all.push(client.try_clone().unwrap());
                        all.push(server.try_clone().unwrap());
                        for (from, to, seen) in [
                            (
                                client.try_clone().unwrap(),
                                server.try_clone().unwrap(),
                                Some(requests.clone()),
                            ),
                            (server, client, None),
                        ] {
                            std::thread::spawn(move || relay_copy(from, to, seen));
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
    }

    /// Cut: stop accepting and break every open connection.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// One pulling agent process serving its own temp home.
pub struct PullAgent {
    pub home: tempfile::TempDir,
    pub port: u16,
    pub child: Child,
}

impl PullAgent {
    pub fn state(&self) -> PathBuf {
        self.home.path().join(".rh/agent")
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    /// A call to the agent's API with its token: status and body text.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>, auth: bool) -> (u16, String) {
        let token = std::fs::read_to_string(self.state().join("token")).unwrap();
        test_support::block_on(async {
            let client = reqwest::Client::new();
            let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
            let mut req = client.request(method, format!("http://127.0.0.1:{}{path}", self.port));
            if auth {
                req = req.bearer_auth(token.trim());
            }
            if let Some(body) = body {
                req = req.json(&body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        })
    }

    /// `printenv VAR` inside base_env: the value, or `None` when unset.
    pub fn env_var(&self, var: &str) -> Option<String> {
        self.env_var_in("base_env", var)
    }

    /// `printenv VAR` inside env `env`: the value, or `None` when unset.
    pub fn env_var_in(&self, env: &str, var: &str) -> Option<String> {
        let (status, body) = self.call(
            "POST",
            &format!("/v1/envs/{env}/run"),
            Some(json!({ "argv": ["printenv", var] })),
            true,
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (v["exit_code"] == 0).then(|| v["stdout"].as_str().unwrap().trim().to_owned())
    }

    /// The value in the published JSON file, if any.
    pub fn token_value(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.file(TOKEN_FILE)).ok()?;
        let v: Value = serde_json::from_str(&text).unwrap();
        v["token"].as_str().map(str::to_owned)
    }

    pub fn metric(&self, name: &str) -> f64 {
        let (status, body) = self.call("GET", "/metrics", None, true);
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {body}"))
            .parse()
            .unwrap()
    }
}

impl Drop for PullAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawn `agent serve --pull BUNDLE` with a 1 s poll on a fresh home. The
/// generic file secret's directory is in the node owner's `allow_paths` and
/// the generic env secret's var in its `allow_vars`: a path or a var from
/// the store is used only where the node allows it.
pub fn spawn_agent(bundle: &Path) -> (tempfile::TempDir, u16, Child) {
    let home = tempfile::tempdir().unwrap();
    let port = crate::vault_common::free_port();
    let config = home.path().join("agent.yaml");
    std::fs::write(
        &config,
        "poll_interval_secs: 1\nheartbeat_secs: 2\npull_boot_wait_secs: 10\n\
         allow_paths: [\"~/.config/mytool\"]\nallow_vars: [MYAPI_KEY]\n",
    )
    .unwrap();
    let child = crate::nodes::pull_agent_command(home.path(), port, &config, bundle)
        .spawn()
        .expect("start the agent");
    (home, port, child)
}

/// Start a pulling agent and wait until it serves (it applies first).
pub fn start_agent(bundle: &Path) -> PullAgent {
    let (home, port, mut child) = spawn_agent(bundle);
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(home.path().join("agent.log")).unwrap_or_default();
            panic!("the pulling agent exited with {status}:\n{log}");
        }
        assert!(Instant::now() < deadline, "the pulling agent did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    PullAgent { home, port, child }
}

pub fn file_secret(value: &str) -> Secret {
    crate::vault_common::file_secret("mytool", &format!("~/{TOKEN_FILE}"), value)
}

pub fn env_secret() -> Secret {
    crate::vault_common::env_secret("myapi", V_ENV)
}

/// A bao dev server with AppRole enabled, and alice's home logged in to it.
pub fn setup() -> Option<(DevServer, Home)> {
    let (server, mut home) = DevServer::with_approle("alice")?;
    home.forbidden
        .extend([V1, V2, V3, V_ENV, V_PERSONAL].map(String::from));
    Some((server, home))
}

/// Enroll `n` bundles of `cluster` into `dir` and check them.
pub fn enroll(home: &Home, cluster: &str, dir: &Path, n: usize) -> Vec<PathBuf> {
    let run = home.ok(&[
        "cluster",
        "enroll",
        cluster,
        "--out",
        dir.to_str().unwrap(),
        "--nodes",
        &n.to_string(),
        "--json",
    ]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    let bundles: Vec<PathBuf> = doc["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| PathBuf::from(b.as_str().unwrap()))
        .collect();
    assert_eq!(bundles.len(), n);
    for b in &bundles {
        assert_eq!(mode(b), 0o600, "{}", b.display());
        let text = std::fs::read_to_string(b).unwrap();
        assert!(!text.contains(ROOT_TOKEN));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["cluster"], cluster);
        assert!(v["wrapped_secret_id"].is_string(), "{text}");
    }
    assert_eq!(mode(dir), 0o700);
    bundles
}

/// `controller status --cluster C --json`.
pub fn status(home: &Home, cluster: &str) -> Value {
    serde_json::from_str(&home.ok(&["status", "--cluster", cluster, "--json"]).stdout).unwrap()
}

/// Wait until `n` nodes report the published version.
pub fn wait_converged(home: &Home, cluster: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(home, cluster);
        let v = &s["published_version"];
        let nodes = s["nodes"].as_array().unwrap();
        if nodes.len() == n && nodes.iter().all(|r| &r["applied_version"] == v) {
            return s;
        }
        assert!(Instant::now() < deadline, "not converged: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A bundle file as JSON.
pub fn bundle_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The status of an AppRole login of the cluster with `secret_id`.
pub fn login_status(server: &DevServer, bundle: &Path, secret_id: &str) -> u16 {
    let role_id = bundle_json(bundle)["role_id"].as_str().unwrap().to_owned();
    raw(
        &server.url,
        "",
        "POST",
        "auth/approle/login",
        Some(json!({ "role_id": role_id, "secret_id": secret_id })),
    )
    .unwrap()
    .0
}

/// A pull cluster `gpu` with `n` bundles enrolled into `<out>/b` and
/// `mytool` (V1) published.
pub fn published_cluster(n: usize) -> Option<(DevServer, Home, tempfile::TempDir, Vec<PathBuf>)> {
    let (server, home) = setup()?;
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("b"), n);
    controller::vault::local::save(home.path(), &file_secret(V1)).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    Some((server, home, out, bundles))
}

/// [`published_cluster`] of one node whose pulling agent holds V1.
pub fn one_pulling_node() -> Option<(DevServer, Home, tempfile::TempDir, PullAgent)> {
    let (server, home, out, bundles) = published_cluster(1)?;
    let agent = start_agent(&bundles[0]);
    assert_eq!(agent.token_value().as_deref(), Some(V1));
    Some((server, home, out, agent))
}

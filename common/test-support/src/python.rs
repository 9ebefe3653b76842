//! Python protocol peers of the session-secret tests: the interpreter
//! (the real one, not a pyenv shim, so env processes started with a
//! neutral environment can run it) when it has the modules a test needs,
//! and moto's server as STS on a loopback port. A missing module is a
//! skip message, or a failure when `CI` is set (`scripts/test.sh` installs
//! them: `ensure_test_tools`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3`'s own executable when it imports `modules` (comma-separated),
/// else `None` after a skip message (a panic with `CI` set).
pub fn python(modules: &str) -> Option<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            &format!("import sys, {modules}; print(sys.executable)"),
        ])
        .output();
    match out {
        Ok(o) if o.status.success() => {
            Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        }
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "python3 with {modules} is missing and CI is set (scripts/test.sh installs them)"
            );
            eprintln!(
                "SKIPPED: python3 lacks {modules} (pip install 'moto[server]' boto3 awscli google-auth)"
            );
            None
        }
    }
}

/// Run `python ARGS` (a server) and wait until it listens on `port`.
pub fn serve(python: &std::path::Path, args: &[&str], port: u16) -> Killed {
    let child = Command::new(python)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a python server");
    crate::wait_for_port(port, args[0]);
    Killed(child)
}

/// moto's server (STS and the rest) on a free loopback port: the process
/// and its endpoint. `None` (after a skip message) without moto.
pub fn moto() -> Option<(Killed, String)> {
    let py = python("moto.server, boto3")?;
    let port = crate::free_port();
    let p = serve(
        &py,
        &[
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ],
        port,
    );
    Some((p, format!("http://127.0.0.1:{port}")))
}

//! Helpers shared by the workspace's tests (a dev-dependency only): loopback
//! ports, file modes, the built binaries of other workspace packages found
//! without a nested `cargo build` ([`workspace_bin`]), one way to run a
//! process with a deadline ([`run`], [`run_ok`]) and its one result type
//! ([`Run`]), one fake agent ([`FakeAgent`]), the one certificate maker
//! (self-signed CA or leaf, [`self_signed`]) and a real TLS server
//! ([`TlsServer`]), the Python protocol peers of the session tests
//! ([`python`]), and small shared pieces: [`KillOnDrop`], [`block_on`],
//! [`argv`], [`names`], [`entry`]. Holds no fixture values; whatever a test
//! passes through it stays the test's.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod bin;
mod fake_agent;
mod process;
pub mod python;
mod tls;

pub use bin::workspace_bin;
pub use fake_agent::FakeAgent;
pub use process::{run, run_ok, Run};
pub use tls::{
    has_openssl, refused_pins, self_signed, self_signed_cert, RefusedPin, Role, TlsServer, Validity,
};

/// A free loopback port for a server a test starts later: picked at random
/// in 20000-32767, below the kernel's ephemeral range (Linux 32768-60999,
/// macOS 49152-65535), checked by binding it, never handed out twice by
/// this process. A port the kernel chose (`bind` to port 0) was released
/// and then, with many tests in parallel opening connections, sometimes
/// taken as the local port of an outgoing connection before the test's
/// server bound it: an agent that then could not listen ("the agent did
/// not start", seen once in CI).
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, Hasher};
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let seed = std::collections::hash_map::RandomState::new();
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for attempt in 0u64..10_000 {
        let mut h = seed.build_hasher();
        h.write_u64(attempt);
        let port = 20_000 + (h.finish() % 12_768) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port in 20000-32767")
}

/// Wait (up to 10 s) until something accepts connections on loopback
/// `port`; panic naming `what` otherwise.
pub fn wait_for_port(port: u16, what: &str) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on port {port}");
}

/// Run `fut` to its end on a fresh current-thread runtime (I/O and timers
/// enabled), for the synchronous tests that make one async call.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread tokio runtime")
        .block_on(fut)
}

/// A child process killed (and reaped) when this is dropped, even when an
/// assertion fails first.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The arguments of `controller cluster add NAME --user USER
/// --identity-file KEY --host H...` for these hosts.
pub fn cluster_add_args<'a>(
    name: &'a str,
    user: &'a str,
    key: &'a str,
    hosts: impl IntoIterator<Item = &'a str>,
) -> Vec<&'a str> {
    let mut args = vec![
        "cluster",
        "add",
        name,
        "--user",
        user,
        "--identity-file",
        key,
    ];
    for host in hosts {
        args.extend(["--host", host]);
    }
    args
}

/// Split a command line of plain words (no quoting) into its arguments:
/// `argv("sync --cluster gpu")` is `["sync", "--cluster", "gpu"]`.
pub fn argv(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

/// The `name` of each entry of a JSON array (panics when `list` is not an
/// array of named entries).
pub fn names(list: &serde_json::Value) -> Vec<&str> {
    let entries = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    entries
        .iter()
        .map(|e| e["name"].as_str().unwrap_or_else(|| panic!("no name: {e}")))
        .collect()
}

/// The entry of JSON array `list` whose `key` is `value` (panics naming it
/// and showing the list when there is none).
pub fn entry<'a>(list: &'a serde_json::Value, key: &str, value: &str) -> &'a serde_json::Value {
    let entries = list
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {list}"));
    entries
        .iter()
        .find(|e| e[key] == value)
        .unwrap_or_else(|| panic!("no entry with {key} {value:?} in {list:#}"))
}

/// The permission bits of `path` (e.g. `0o600`); panics naming the path
/// when it cannot be read.
pub fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_reads_the_permission_bits() {
        let dir = std::env::temp_dir().join(format!("ts-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("f");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(mode(&f), 0o640);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}

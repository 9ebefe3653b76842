//! Helpers shared by the workspace's tests (a dev-dependency only): loopback
//! ports, file modes, the built binaries of other workspace packages found
//! without a nested `cargo build` ([`workspace_bin`]), one way to run a
//! process with a deadline ([`run`]), and one fake agent ([`FakeAgent`]).
//! Holds no fixture values; whatever a test passes through it stays the
//! test's.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod bin;
mod fake_agent;
mod process;

pub use bin::workspace_bin;
pub use fake_agent::FakeAgent;
pub use process::{run, Ran};

/// A free loopback port: bound, then released (racy by nature; good enough
/// for tests).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .expect("bind a loopback port")
        .local_addr()
        .expect("the bound address")
        .port()
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

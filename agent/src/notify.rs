//! systemd readiness (`sd_notify(3)`, `Type=notify` in `rh-agent.service`):
//! once the agent listens (in pull mode: after the first poll was applied),
//! it sends `READY=1` to `$NOTIFY_SOCKET`, so `systemctl start` and units
//! ordered after it see the node applied, not merely started. A no-op
//! without `$NOTIFY_SOCKET` (boot script, tests). Sends nothing else: no
//! status text, never a value.

use std::os::unix::net::UnixDatagram;

/// Tell the service manager the agent is ready; errors are logged, not fatal.
pub(crate) fn ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, b"READY=1") {
        tracing::warn!(error = %e, "could not notify systemd that the agent is ready");
    }
}

fn send(path: &std::ffi::OsStr, msg: &[u8]) -> std::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let sock = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    // `@name`: a Linux abstract socket.
    if let Some(name) = bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            return sock.send_to_addr(msg, &addr);
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = name;
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "abstract NOTIFY_SOCKET",
            ));
        }
    }
    sock.send_to(msg, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_reaches_a_path_socket_and_an_abstract_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("rh-agent-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let server = UnixDatagram::bind_addr(&addr).unwrap();
            send(std::ffi::OsStr::new(&format!("@{name}")), b"READY=1").unwrap();
            let n = server.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"READY=1");
        }
    }
}

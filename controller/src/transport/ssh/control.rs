//! The files of one node's master connection, all in the private control
//! dir (`~/.rh/ssh`, 0700, owned by the user; a control socket is as good as
//! an authenticated session): the control socket `<16 hex>`, its lock
//! `<ctl>.lock`, ssh's log `<ctl>.log`, the agent forwards `<ctl>.p<port>`
//! and the token cache `<ctl>.token` (0600: the node's agent token and the
//! port it reported, kept only while the master lives and only used once
//! the agent proved it holds that token). Also closes a master through its
//! socket (ssh's mux protocol, `MUX_C_TERMINATE`) without starting a
//! process or waiting for it to exit. Never logs the token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::SecretText;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clusters::SshTarget;
use crate::transport::{TransportError, TransportOptions};

/// A unix socket path must fit in `sun_path` (108 bytes) and ssh first binds
/// `<path>.<16 random chars>`: keep control paths at most this long.
const MAX_CONTROL_PATH: usize = 90;

/// The directory for control sockets: `opts.control_dir`, or
/// `/tmp/rh-ssh-<uid>` when home is so deep that socket paths would not fit.
pub(crate) fn control_dir(opts: &TransportOptions) -> PathBuf {
    // "/" + 16 hex + ".lock"
    if opts.control_dir.as_os_str().len() + 22 <= MAX_CONTROL_PATH {
        opts.control_dir.clone()
    } else {
        std::env::temp_dir().join(format!("rh-ssh-{}", nix::unistd::geteuid().as_raw()))
    }
}

/// The control socket of one node's master: a short fixed name derived from
/// everything that decides where and as whom ssh connects.
pub(crate) fn control_path(opts: &TransportOptions, t: &SshTarget) -> PathBuf {
    let mut h = Sha256::new();
    for part in [
        t.user.as_deref().unwrap_or(""),
        &t.host,
        &t.port.to_string(),
        &t.identity_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        &opts
            .ssh_config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    control_dir(opts).join(name)
}

/// ssh's log of the master at `ctl` (`-E`).
pub(crate) fn log_path(ctl: &Path) -> PathBuf {
    ctl.with_extension("log")
}

/// The unix socket the master at `ctl` forwards to `127.0.0.1:<port>` on the node.
pub(crate) fn forward_path(ctl: &Path, port: u16) -> PathBuf {
    ctl.with_extension(format!("p{port}"))
}

fn token_path(ctl: &Path) -> PathBuf {
    ctl.with_extension("token")
}

/// Create `~/.rh/ssh` (0700) for control sockets, and refuse it unless it
/// is a real directory (not a symlink) owned by this user; group and other
/// permissions are removed. A control socket is as good as an authenticated
/// session, so nobody else may reach one.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), TransportError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let fail = |detail: String| TransportError::ControlDir {
        path: dir.display().to_string(),
        detail,
    };
    common::fsutil::create_private_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(fail("is not a directory (a symlink?); refused".into()));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(fail(format!(
            "is owned by uid {}, not by you (uid {me}); refused",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("chmod 700: {e}")))?;
    }
    Ok(())
}

/// Hold the node's lock file (`<ctl>.lock`) while checking or starting its master.
pub(crate) async fn lock_node(ctl: &Path) -> Result<crate::transport::FileLock, TransportError> {
    crate::transport::lock_file(ctl.with_extension("lock"))
        .await
        .map_err(|detail| TransportError::ControlDir {
            path: ctl.display().to_string(),
            detail,
        })
}

/// The token (and the port the agent reported) cached beside the master at
/// `ctl`, if any. A cache that cannot be read or parsed is no cache.
pub(crate) fn read_cached_token(ctl: &Path) -> Option<(SecretText, Option<u16>)> {
    let text = common::fsutil::read_optional(&token_path(ctl)).ok()??;
    let mut lines = text.expose_secret().lines();
    let token = lines.next()?.trim();
    if !valid_token(token) {
        return None;
    }
    let port = lines.next().and_then(|p| p.trim().parse().ok());
    Some((SecretText::new(token.to_owned()), port))
}

/// Cache a proven token beside the master at `ctl` (0600, atomic).
pub(crate) fn write_cached_token(ctl: &Path, token: &SecretText, port: Option<u16>) {
    let mut text = SecretText::new(format!("{}\n", token.expose_secret()));
    if let Some(p) = port {
        text = SecretText::new(format!("{}{p}\n", text.expose_secret()));
    }
    if let Err(e) = common::fsutil::atomic_write(&token_path(ctl), text.expose_secret().as_bytes())
    {
        // Only a cache: the next command reads the token again.
        tracing::debug!(error = %e, "cannot cache the agent token");
    }
}

/// Drop the token cached beside the master at `ctl`.
pub(crate) fn drop_cached_token(ctl: &Path) {
    let _ = std::fs::remove_file(token_path(ctl));
}

/// Whether `token` looks like an agent token: not empty, no whitespace or
/// control characters.
pub(crate) fn valid_token(token: &str) -> bool {
    !token.is_empty() && !token.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Remove what a master at `ctl` leaves behind: its log, its forward
/// sockets and the token cache (the control socket itself only when
/// `socket_too`: a live master removes its own when it exits).
pub(crate) fn remove_master_files(ctl: &Path, socket_too: bool) {
    if socket_too {
        let _ = std::fs::remove_file(ctl);
    }
    let _ = std::fs::remove_file(log_path(ctl));
    drop_cached_token(ctl);
    let (Some(dir), Some(name)) = (ctl.parent(), ctl.file_name()) else {
        return;
    };
    let prefix = format!("{}.p", name.to_string_lossy());
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// ssh's mux protocol (PROTOCOL.mux): `MUX_MSG_HELLO` version 4, then
/// `MUX_C_TERMINATE` with request id 1, each a `u32` length and `u32`s.
const MUX_HELLO_AND_TERMINATE: [u8; 24] = [
    0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 4, // hello, version 4
    0, 0, 0, 8, 0x10, 0, 0, 5, 0, 0, 0, 1, // terminate, request id 1
];
const MUX_MSG_HELLO: u32 = 1;
const MUX_S_OK: u32 = 0x8000_0001;

/// Ask the master at `ctl` to exit (what `ssh -O exit` does) without
/// starting a process, and without waiting for the master to be gone. The
/// master sends its hello once it read the request; with `confirm`, its
/// answer is awaited too (`MUX_S_OK`, or the connection closing: the master
/// often exits before its answer goes out). True when the master took the
/// request (and, with `confirm`, did not refuse it).
pub(crate) async fn terminate(ctl: &Path, confirm: bool) -> bool {
    let ask = async {
        let mut sock = tokio::net::UnixStream::connect(ctl).await?;
        sock.write_all(&MUX_HELLO_AND_TERMINATE).await?;
        let len = sock.read_u32().await? as usize;
        if len < 4 || sock.read_u32().await? != MUX_MSG_HELLO {
            return Ok(false);
        }
        if !confirm {
            return Ok(true);
        }
        let mut rest = vec![0u8; (len - 4).min(64 << 10)];
        sock.read_exact(&mut rest).await?;
        match sock.read_u32().await {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
            Err(e) => Err(e),
            Ok(_) => Ok(sock.read_u32().await? == MUX_S_OK),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), ask).await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "closing the ssh master");
            false
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_dir_is_made_private_and_a_symlink_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/ssh");
        ensure_private_dir(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let err = ensure_private_dir(&link).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
    }

    #[test]
    fn the_token_cache_is_private_and_goes_with_the_master() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ctl = tmp.path().join("0123456789abcdef");
        assert!(read_cached_token(&ctl).is_none());
        write_cached_token(&ctl, &SecretText::new("tok-en".into()), Some(4242));
        let meta = std::fs::metadata(token_path(&ctl)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let (token, port) = read_cached_token(&ctl).unwrap();
        assert_eq!((token.expose_secret(), port), ("tok-en", Some(4242)));
        write_cached_token(&ctl, &SecretText::new("other".into()), None);
        let (token, port) = read_cached_token(&ctl).unwrap();
        assert_eq!((token.expose_secret(), port), ("other", None));
        std::fs::write(forward_path(&ctl, 1), "").unwrap();
        remove_master_files(&ctl, true);
        assert!(read_cached_token(&ctl).is_none());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        // A malformed cache is no cache.
        std::fs::write(token_path(&ctl), "two words\n").unwrap();
        assert!(read_cached_token(&ctl).is_none());
    }
}

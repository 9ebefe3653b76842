//! TLS for a non-loopback listener (rustls via tokio-rustls, ring provider):
//! loads the PEM certificate chain and key named in the config file
//! (`rustls_pki_types`' PEM parser) into an acceptor; [`crate::conn`] serves
//! connections through it. A key file that group or others can read is
//! refused (like the controller's token file); an expired or not yet valid
//! certificate is warned about. The key is read once and never logged;
//! errors name files only.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Build a TLS acceptor from the configured PEM files.
pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, String> {
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .map_err(|e| format!("read certificates from {}: {e}", tls.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("read certificates from {}: {e}", tls.cert.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!("no certificate in {}", tls.cert.display()));
    };
    warn_if_not_valid_now(leaf, &tls.cert);
    // The mode is checked and the key read on one open file, so a swap of
    // the path between the check and the read cannot slip a readable key in.
    let pem = read_private_key(&tls.key)?;
    // pki-types' errors name the PEM problem, never key material.
    let key = PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("read private key from {}: {e}", tls.key.display()))?;
    drop(pem);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "certificate {} and key {}: {e}",
                tls.cert.display(),
                tls.key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The largest key file read: PEM keys are a few KiB.
const MAX_KEY_BYTES: u64 = 1 << 20;

/// Read the key file, refusing one that group or others can read (or
/// write), or that is not a regular file. The bytes are zeroed on drop.
fn read_private_key(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use std::io::Read;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc_nonblock())
        .open(path)
        .map_err(|e| format!("private key {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("private key {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "private key {} is not a regular file",
            path.display()
        ));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "private key {} is readable by others (mode {mode:o}): run `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let mut pem =
        zeroize::Zeroizing::new(Vec::with_capacity(meta.len().min(MAX_KEY_BYTES) as usize));
    file.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut pem)
        .map_err(|e| format!("private key {}: {e}", path.display()))?;
    if pem.len() as u64 > MAX_KEY_BYTES {
        return Err(format!(
            "private key {} is larger than 1 MiB",
            path.display()
        ));
    }
    Ok(pem)
}

/// `O_NONBLOCK`, so opening a FIFO put where the key should be does not hang
/// (it is then refused as not a regular file).
fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

/// Log a warning when the certificate's validity period does not hold now.
fn warn_if_not_valid_now(cert: &CertificateDer<'_>, path: &Path) {
    let Some((not_before, not_after)) = common::x509::validity(cert.as_ref()) else {
        tracing::warn!(cert = %path.display(), "cannot read the certificate's validity period");
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now > not_after {
        tracing::warn!(cert = %path.display(), not_after = %utc(not_after), "the TLS certificate has expired: clients will refuse it");
    } else if now < not_before {
        tracing::warn!(cert = %path.display(), not_before = %utc(not_before), "the TLS certificate is not valid yet");
    }
}

fn utc(secs: u64) -> String {
    common::time::rfc3339(i64::try_from(secs).unwrap_or(i64::MAX), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_times_are_rfc3339() {
        assert_eq!(utc(951_868_800), "2000-03-01T00:00:00Z");
    }

    #[test]
    fn reads_the_validity_of_a_real_certificate_and_refuses_a_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        if !test_support::has_openssl() {
            eprintln!("SKIPPED: openssl is not installed");
            return;
        }
        use test_support::{Role, Validity};
        let (cert, key) =
            test_support::self_signed(dir.path(), "c", "localhost", Validity::Days(3), Role::Leaf);
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        let (not_before, not_after) = common::x509::validity(der.as_ref()).unwrap();
        assert_eq!(not_after - not_before, 3 * 86_400);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(not_before <= now + 60 && now < not_after);

        use std::os::unix::fs::PermissionsExt;
        let tls = TlsConfig {
            cert,
            key: key.clone(),
        };
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = acceptor(&tls).err().expect("a readable key is refused");
        assert!(err.contains("readable by others"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(acceptor(&tls).is_ok());

        // A FIFO where the key should be is refused at once (no hang on open).
        let fifo = key.with_extension("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let err = acceptor(&TlsConfig {
            cert: tls.cert.clone(),
            key: fifo,
        })
        .err()
        .expect("a FIFO key is refused");
        assert!(err.contains("not a regular file"), "{err}");
    }
}

//! TLS for the remote store's clients, the controller's and the agent's
//! alike: one rustls configuration, and one way of naming a TLS failure.
//!
//! [`client_config`] trusts what reqwest's `rustls-tls` trusted before (the
//! built-in web PKI roots, plus the pinned certificates of `VAULT_CACERT`,
//! `ca_cert` or the bundle's `ca_pem` as roots) and one thing more: a server
//! whose end-entity certificate is byte for byte one of the pinned
//! certificates is trusted as itself, after checking that it names the
//! host (subjectAltName) and is within its validity period. That is what a
//! self-signed store certificate needs (openssl's defaults make it a CA,
//! which web PKI refuses as a server's own certificate,
//! `CaUsedAsEndEntity`) and what the `bao` CLI accepts from the same file.
//! Every other chain is verified by rustls's web PKI verifier as before;
//! handshake signatures are always checked with the provider's algorithms.
//! Verification is never turned off.
//!
//! [`tls_failure`] finds a rustls error in a client error's sources and
//! says what it was (a refused certificate, a failed handshake), so no
//! TLS failure reads as "cannot connect". Nothing here logs.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The PEM certificates in `pem`; an error says what is wrong (never the
/// file's content). No certificate at all is an error.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The TLS configuration of a store client: web PKI roots and `pinned` as
/// roots, a pinned end-entity certificate trusted as itself (name and
/// validity checked), HTTP/1.1 (what reqwest offers without HTTP/2). For
/// `reqwest::ClientBuilder::use_preconfigured_tls`.
pub fn client_config(pinned: &[CertificateDer<'static>]) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedOrWebPki::new(pinned, &provider)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| format!("TLS versions: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A pinned end-entity certificate is trusted as itself; anything else is
/// web PKI's to decide.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedOrWebPki {
    /// Web PKI over the built-in roots plus `pinned`.
    fn new(
        pinned: &[CertificateDer<'static>],
        provider: &Arc<CryptoProvider>,
    ) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for cert in pinned {
            roots
                .add(cert.clone())
                .map_err(|e| format!("a certificate cannot be used as a trust anchor: {e}"))?;
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| format!("cannot build the certificate verifier: {e}"))?;
        Ok(Self {
            pinned: pinned.to_vec(),
            webpki,
            algorithms: provider.signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            verify_pinned(end_entity, server_name, now)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A pinned certificate used as the server's own: it must name the host
/// the client asked for and be valid now.
fn verify_pinned(
    cert: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let parsed = rustls::server::ParsedCertificate::try_from(cert)?;
    rustls::client::verify_server_name(&parsed, server_name)?;
    let (not_before, not_after) = crate::x509::validity(cert.as_ref()).ok_or(
        rustls::Error::InvalidCertificate(CertificateError::BadEncoding),
    )?;
    let now = now.as_secs();
    if now < not_before {
        return Err(CertificateError::NotValidYet.into());
    }
    if now > not_after {
        return Err(CertificateError::Expired.into());
    }
    Ok(())
}

/// What a TLS failure in `err`'s sources was, as a phrase for an error
/// message ("the server's TLS certificate was refused (...)", "TLS
/// handshake failed (...)"); `None` when no TLS error is among them.
pub fn tls_failure(err: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(match tls {
                rustls::Error::InvalidCertificate(cert) => format!(
                    "the server's TLS certificate was refused ({})",
                    certificate_problem(cert)
                ),
                other => format!("TLS handshake failed ({other})"),
            });
        }
        // An `io::Error` wrapping another error (hyper and tokio-rustls nest
        // them) hides it from `source()`: step into it.
        source = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// A certificate problem in words, with rustls's name for it.
fn certificate_problem(e: &CertificateError) -> String {
    let what = match e {
        CertificateError::UnknownIssuer => {
            "not signed by a trusted CA, and not one of the pinned certificates"
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "it has expired",
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "it is not valid yet"
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "it does not name the host in the URL"
        }
        CertificateError::BadSignature => "its signature does not verify",
        CertificateError::Revoked => "it is revoked",
        _ => "",
    };
    if what.is_empty() {
        format!("{e:?}")
    } else {
        format!("{what}: {e:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA:TRUE certificate for `host`, as DER.
    fn self_signed(host: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) =
            test_support::self_signed_cert(dir.path(), "c", host, test_support::Validity::Current);
        pem_certs(&std::fs::read(cert).unwrap())
            .unwrap()
            .remove(0)
            .to_vec()
    }

    fn verifier(pinned: &[&[u8]]) -> PinnedOrWebPki {
        let pinned: Vec<CertificateDer<'static>> = pinned
            .iter()
            .map(|d| CertificateDer::from(d.to_vec()))
            .collect();
        assert!(client_config(&pinned).is_ok());
        PinnedOrWebPki::new(&pinned, &Arc::new(rustls::crypto::ring::default_provider())).unwrap()
    }

    fn check(v: &PinnedOrWebPki, cert: &[u8], host: &str, at: u64) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        v.verify_server_cert(
            &CertificateDer::from(cert.to_vec()),
            &[],
            &name,
            &[],
            UnixTime::since_unix_epoch(std::time::Duration::from_secs(at)),
        )
        .map(|_| ())
    }

    fn now() -> u64 {
        UnixTime::now().as_secs()
    }

    #[test]
    fn a_pinned_self_signed_ca_is_trusted_as_itself_for_its_name_and_period() {
        let pinned = self_signed("127.0.0.1");
        let other = self_signed("127.0.0.1");
        let named = self_signed("bao.example");
        let v = verifier(&[&pinned, &named]);
        assert_eq!(check(&v, &pinned, "127.0.0.1", now()), Ok(()));
        assert_eq!(check(&v, &named, "bao.example", now()), Ok(()));
        // Another self-signed certificate for the same name: not pinned,
        // and web PKI still refuses a CA as the server's own.
        assert!(
            matches!(
                check(&v, &other, "127.0.0.1", now()),
                Err(rustls::Error::InvalidCertificate(_))
            ),
            "{:?}",
            check(&v, &other, "127.0.0.1", now())
        );
        // The name and the validity period are still checked.
        assert!(matches!(
            check(&v, &pinned, "127.0.0.2", now()),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ));
        assert!(matches!(
            check(&v, &named, "other.example", now()),
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            ))
        ));
        assert_eq!(
            check(&v, &pinned, "127.0.0.1", now() + 3 * 86_400),
            Err(CertificateError::Expired.into())
        );
        assert_eq!(
            check(&v, &pinned, "127.0.0.1", now() - 86_400),
            Err(CertificateError::NotValidYet.into())
        );
        // Nothing pinned: what web PKI says, as before.
        let v = verifier(&[]);
        assert!(check(&v, &pinned, "127.0.0.1", now()).is_err());
    }

    #[test]
    fn tls_failures_are_named_from_the_error_sources() {
        // As reqwest's connector nests it: io::Error in io::Error.
        let refused = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        ));
        let text = tls_failure(&refused).unwrap();
        assert!(
            text.starts_with(
                "the server's TLS certificate was refused (not signed by a trusted CA"
            ),
            "{text}"
        );
        assert!(text.contains("UnknownIssuer"), "{text}");
        let ca = rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
            Arc::new(std::io::Error::other("CaUsedAsEndEntity")),
        )));
        assert!(tls_failure(&ca).unwrap().contains("CaUsedAsEndEntity"));
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert!(tls_failure(&alert)
            .unwrap()
            .starts_with("TLS handshake failed"));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(tls_failure(&refused), None);
    }
}

//! TLS for a non-loopback listener (rustls via tokio-rustls, ring provider):
//! loads the PEM certificate chain and key named in the config file and
//! serves HTTP/1.1 over TLS with graceful shutdown. The key is read once and
//! never logged; errors name files only.

use std::future::Future;
use std::io::BufReader;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Build a TLS acceptor from the configured PEM files.
pub(crate) fn acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, String> {
    let open = |path: &std::path::Path| {
        std::fs::File::open(path)
            .map(BufReader::new)
            .map_err(|e| format!("open {}: {e}", path.display()))
    };
    let certs = rustls_pemfile::certs(&mut open(&tls.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("read certificates from {}: {e}", tls.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", tls.cert.display()));
    }
    let key = rustls_pemfile::private_key(&mut open(&tls.key)?)
        .map_err(|_| format!("read private key from {}", tls.key.display()))?
        .ok_or_else(|| format!("no private key in {}", tls.key.display()))?;
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

/// Accept TLS connections until `stopped` resolves, then let open
/// connections finish their current request.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    app: Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => {
                let Ok((stream, _peer)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(app.clone());
                let mut stop = stop_rx.clone();
                connections.spawn(async move {
                    let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                    let Ok(Ok(tls)) = handshake.await else { return };
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

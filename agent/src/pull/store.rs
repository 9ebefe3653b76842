//! The agent's options of the one OpenBao client (`common::openbao`) for
//! a bundle's store URLs and CA. Requests start at a node picked at random
//! per agent (OpenBao standbys serve reads with Raft storage, so reads
//! spread over the cluster). A write or login (anything but GET: standbys
//! forward those to the active node) that timed out is not sent to the
//! next node: that node would forward it to the same overloaded active
//! node, and the store still works on the abandoned one; the poll fails and
//! backs off instead (a timeout is not "busy": retrying it within the poll,
//! tried with 10,000 nodes booting, fed the overload). Logins and writes
//! start at the active node, found with the unauthenticated `sys/health`
//! (200 there and only there) and forgotten on any failure: a standby
//! would forward them over its cluster connection (the 10,000-node boot of
//! scripts/bench.d/60-fleet.sh took 46% of the machine instead of 49%,
//! probes included); reads stay spread. Answers are read up to
//! [`BODY_CAP`]; there is no election wait (the poll backs off), only the
//! login's own short retry (`creds`).

use std::time::Duration;

use common::fleet::Bundle;
use common::openbao::{BuildError, Client, Options, Retry, Start, ToActive};

/// Largest answer read from the store (a manifest or one secret is far smaller).
pub(crate) const BODY_CAP: usize = 4 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a store connection may sit idle before the client closes it:
/// three poll periods. The connection reads go over, used every poll, stays
/// open (a new TCP connection per read costs the store half as much again:
/// 0.51 against 0.34 CPU-ms, scripts/bench.d/62-fleet-store-cost.sh); one to
/// the active node that only carries a login every few minutes and a report
/// every heartbeat is closed 30 s after its last use (at the default 10 s
/// poll) instead of reqwest's 90 s, so store nodes hold fewer idle
/// connections (a goroutine and its buffers each) for nodes that write
/// through them.
fn idle_timeout(poll: Duration) -> Duration {
    poll * 3
}

/// A client for the bundle's URLs and CA, starting at a random URL, for a
/// node polling every `poll`. The bundle's CA certificates are roots, and
/// one of them used as the store's own certificate is trusted as itself
/// (a self-signed store certificate), name and validity checked.
pub(crate) fn client_for(bundle: &Bundle, poll: Duration) -> Result<Client, BuildError> {
    Client::new(
        &bundle.urls,
        bundle.ca_pem.as_deref().map(str::as_bytes),
        Options {
            user_agent: concat!("rh-agent/", env!("CARGO_PKG_VERSION")),
            connect_timeout: CONNECT_TIMEOUT,
            failover_connect_timeout: None,
            request_timeout: REQUEST_TIMEOUT,
            idle_timeout: Some(idle_timeout(poll)),
            body_cap: BODY_CAP,
            start: Start::Random,
            to_active: ToActive::Writes,
            resend_timed_out_writes: false,
            retry: Retry::NONE,
        },
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    use common::openbao::{Call, Method};
    use serde_json::json;

    use super::*;

    /// A store node answering every request `200 {}` on kept-alive
    /// connections, counting the connections open to it and those ever
    /// opened.
    async fn counted_node() -> (String, Arc<AtomicI64>, Arc<AtomicI64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (open, opened) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
        let (o, n) = (open.clone(), opened.clone());
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                o.fetch_add(1, Ordering::SeqCst);
                n.fetch_add(1, Ordering::SeqCst);
                let o = o.clone();
                tokio::spawn(async move {
                    answer_until_closed(&mut conn).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        (url, open, opened)
    }

    /// Answer each request head (no bodies: GETs) until the client closes.
    async fn answer_until_closed(conn: &mut tokio::net::TcpStream) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut seen, mut buf) = (Vec::new(), [0u8; 1024]);
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(k) => seen.extend_from_slice(&buf[..k]),
            }
            while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                seen.drain(..end + 4);
                let answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                              Content-Length: 2\r\n\r\n{}";
                if conn.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    }

    #[tokio::test]
    async fn a_connection_used_every_poll_is_kept_and_one_idle_for_three_is_closed() {
        let (url, open, opened) = counted_node().await;
        let bundle: Bundle = serde_json::from_value(json!({
            "format": 1, "cluster": "c", "urls": [url], "mount": "secret",
            "prefix": "p", "auth_mount": "approle", "role_id": "r"
        }))
        .unwrap();
        let poll = Duration::from_millis(300);
        let client = client_for(&bundle, poll).unwrap();
        for _ in 0..8 {
            let a = client
                .send(&Call::new("probe", Method::GET, "sys/health"))
                .await
                .unwrap();
            assert_eq!(a.status.as_u16(), 200);
            tokio::time::sleep(poll).await;
        }
        assert_eq!(
            (open.load(Ordering::SeqCst), opened.load(Ordering::SeqCst)),
            (1, 1)
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            open.load(Ordering::SeqCst),
            0,
            "an idle connection was kept"
        );
    }

    /// A client of one store URL with `ca_pem` as the bundle's CA.
    fn tls_client(url: &str, ca_pem: &std::path::Path) -> Client {
        let bundle: Bundle = serde_json::from_value(json!({
            "format": 1, "cluster": "c", "urls": [url], "mount": "secret",
            "prefix": "p", "auth_mount": "approle", "role_id": "r",
            "ca_pem": std::fs::read_to_string(ca_pem).unwrap()
        }))
        .unwrap();
        client_for(&bundle, Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn a_pinned_self_signed_store_certificate_is_trusted_as_itself_and_nothing_else() {
        use test_support::{self_signed_cert, TlsServer, Validity};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // openssl's self-signed certificate (CA:TRUE) for the store's IP.
        let (cert, key) = self_signed_cert(d, "store", "127.0.0.1", Validity::Current);
        let server = TlsServer::start(&d.join("s1"), &cert, &key, &[]);
        let answer = tls_client(&server.url(), &cert)
            .send(&Call::new("health", Method::GET, "sys/health"))
            .await
            .unwrap_or_else(|e| panic!("the pinned certificate is trusted: {e}"));
        assert_eq!(answer.status.as_u16(), 200);
        assert_eq!(answer.json("health").unwrap()["version"], "tls-test");

        // Refused, each named as a certificate problem (never "cannot connect").
        let (_servers, refused) = test_support::refused_pins(d, &server);
        for pin in &refused {
            let (url, pinned, problem) = (&pin.url, &pin.pinned, pin.problem);
            let err = tls_client(url, pinned)
                .send(&Call::new("health", Method::GET, "sys/health"))
                .await
                .err()
                .unwrap_or_else(|| panic!("{url} with {} was trusted", pinned.display()))
                .to_string();
            assert!(
                err.contains(&format!("{url}: the server's TLS certificate was refused")),
                "{err}"
            );
            assert!(err.contains(problem), "{problem}: {err}");
            assert!(!err.contains("cannot connect"), "{err}");
        }
    }
}

//! f04: workload identity: every pulling node keeps a token file the HA
//! store signed, verified by PyJWT against the JWKS every store node
//! serves, refreshed within its TTL, and shown by `status`; no token in any
//! output.

use super::*;

/// The AWS token file of a node, copied to `dir/<container>.jwt` (0600 on
/// the node, ubuntu's). `None` while it is not there.
fn copy_token(c: &str, dir: &Path) -> Option<(PathBuf, Vec<u8>)> {
    let f = node_file(c, ".rh/agent/identity/aws.jwt")?;
    assert_eq!(f.mode, "600", "{c}");
    assert_eq!(f.owner, "ubuntu:ubuntu", "{c}");
    let path = dir.join(format!("{c}.jwt"));
    std::fs::write(&path, &f.bytes).unwrap();
    Some((path, f.bytes))
}

/// PyJWT on this host: the token in `file` verified against `jwks` (a file)
/// with the issuer and subject `federate` printed; its claims.
fn pyjwt_verify(s: &Suite, file: &Path, jwks: &Path, issuer: &str, subject: &str) -> Value {
    let mut c = Command::new("python3");
    c.arg(s.root.join("controller/tests/data/federation/peers.py"))
        .arg("verify")
        .arg(file)
        .arg("--jwks")
        .arg(jwks)
        .args(["--issuer", issuer, "--sub", subject, "--cluster", PULL])
        .args(["--aud", "sts.amazonaws.com"]);
    let out = run_with_deadline(c, Duration::from_secs(60), "python3", &["peers.py verify"]);
    assert_eq!(
        out.code,
        0,
        "PyJWT refused {}: {}",
        file.display(),
        out.show()
    );
    serde_json::from_str(out.stdout.trim()).expect("claims")
}

/// What a node's identity token must verify against.
struct Checked<'a> {
    dir: &'a Path,
    jwks: &'a Path,
    issuer: &'a str,
    subject: &'a str,
}

impl Checked<'_> {
    /// Wait (90 s at most) for node `c`'s token, other than `not` when
    /// given; verify it with PyJWT, keep its signature for the leak check,
    /// return its bytes.
    fn token(&self, f: &Fleet, c: &str, not: Option<&Vec<u8>>) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(90);
        let (file, bytes) = loop {
            match copy_token(c, self.dir) {
                Some(t) if Some(&t.1) != not => break t,
                _ => {}
            }
            assert!(Instant::now() < deadline, "{c}: no (new) identity token");
            thread::sleep(Duration::from_millis(500));
        };
        let claims = pyjwt_verify(f.s, &file, self.jwks, self.issuer, self.subject);
        assert_eq!(claims["iss"], self.issuer, "{c}");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let sig = text.rsplit('.').next().unwrap_or_default().to_owned();
        f.secrets.lock().unwrap().push(sig);
        bytes
    }
}

/// Each answering store node's JWKS (its keys sorted by `kid`), polled
/// until every node publishes the same keys; panics naming each node's
/// key ids when they still differ after 30 s.
fn agreed_jwks(urls: &[String], token: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut seen: Vec<(String, String, Vec<String>)> = Vec::new();
        for url in urls {
            let (code, body) = store_get(url, token, "identity/oidc/.well-known/keys");
            if code == "200" {
                let doc: Value = serde_json::from_str(&body).expect("JWKS");
                let mut keys = doc["keys"].as_array().cloned().unwrap_or_default();
                keys.sort_by_key(|k| k["kid"].as_str().unwrap_or_default().to_owned());
                let kids = keys
                    .iter()
                    .map(|k| k["kid"].as_str().unwrap_or_default().to_owned())
                    .collect();
                seen.push((url.clone(), Value::Array(keys).to_string(), kids));
            }
        }
        assert!(!seen.is_empty(), "no store node serves the JWKS");
        if seen.windows(2).all(|w| w[0].1 == w[1].1) {
            return seen.into_iter().map(|(_, keys, _)| keys).collect();
        }
        assert!(
            Instant::now() < deadline,
            "the store nodes publish different keys: {:?}",
            seen.iter().map(|(u, _, k)| (u, k)).collect::<Vec<_>>()
        );
        thread::sleep(Duration::from_millis(500));
    }
}

#[test]
#[ignore = "needs the docker-compose cluster and the HA store: scripts/e2e.sh"]
fn f04_federated_pull_nodes_keep_a_token_the_ha_store_signed() {
    let f = fleet();
    let (s, b) = (f.s, &f.b);
    f.ensure_published();
    // One issuer for the whole store (each node would otherwise sign with
    // its own address): the first node's URL here; a load balancer's https
    // address in production.
    let out = f.ctl.ok(
        &[
            "cluster",
            "federate",
            PULL,
            "--aws-role-arn",
            "arn:aws:iam::123456789012:role/e2e-nodes",
            "--token-ttl",
            "1m",
            "--issuer",
            &b.node_urls[0],
            "--json",
        ],
        0,
    );
    let doc = out.json();
    let issuer = doc["issuer"].as_str().expect("issuer").to_owned();
    let subject = doc["subject"].as_str().expect("subject").to_owned();
    assert_eq!(issuer, format!("{}/v1/identity/oidc", b.node_urls[0]));
    let dir = s.work.join("identity");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The JWKS from every store node that answers: the same keys, once the
    // standbys have applied the key federate just wrote (OpenBao's standbys
    // answer reads from their own Raft copy, eventually consistent).
    let jwks = agreed_jwks(&b.node_urls, &b.root_token);
    let jwks_file = dir.join("keys.json");
    std::fs::write(&jwks_file, format!("{{\"keys\": {}}}", jwks[0])).unwrap();

    let nodes: Vec<String> = s
        .bare
        .iter()
        .map(|n| n.container.clone())
        .chain(f.pulled.iter().cloned())
        .collect();
    let check = Checked {
        dir: &dir,
        jwks: &jwks_file,
        issuer: &issuer,
        subject: &subject,
    };
    let first: Vec<Vec<u8>> = nodes.iter().map(|c| check.token(f, c, None)).collect();
    // Refreshed within the 60 s TTL (at 15-30 s), and still verifying.
    for (c, before) in nodes.iter().zip(&first) {
        check.token(f, c, Some(before));
    }
    // status: every node's identity, from its reports. The cluster also
    // holds f03's systemd node, so the rows can outnumber `nodes`: every
    // live row shows the identity, and at least one per node checked here.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (_, rows) = f.status();
        let live: Vec<&Value> = rows.iter().filter(|r| r["live"] == true).collect();
        let federated = live
            .iter()
            .filter(|r| r["identity"]["clouds"] == serde_json::json!(["aws"]))
            .count();
        if federated == live.len() && federated >= nodes.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status does not show every node's identity: {rows:?}"
        );
        thread::sleep(Duration::from_secs(1));
    }
    f.ctl.ok(&["status", "--cluster", PULL], 0);
    f.assert_no_leaks();
}

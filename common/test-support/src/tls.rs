//! The one way the tests make certificates, and a real TLS server for the
//! store clients' tests: [`self_signed_cert`] makes a self-signed
//! certificate with the openssl CLI the way a user makes one for a store
//! (openssl's CA:TRUE, a subjectAltName), current, valid for some days or
//! long expired; [`self_signed`] with [`Role::Leaf`] the same as an
//! end-entity certificate (CA:FALSE), the agent's own TLS listener's;
//! [`has_openssl`] says whether they can run. [`TlsServer`] is `openssl
//! s_server` with it, answering `GET /v1/sys/health` with a 200 JSON body
//! (the request a store client makes first) and the GETs the test names
//! with theirs (s_server answers GET only). Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Whether a made certificate is valid now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// From now for two days.
    Current,
    /// From now for this many days.
    Days(u32),
    /// 2020-01-01 to 2020-01-02.
    Expired,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("openssl {}: {e} (is openssl installed?)", args[0]));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the openssl CLI runs here (the tests that need it skip without).
pub fn has_openssl() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a made certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// CA:TRUE, as openssl makes a self-signed one (a store's).
    Ca,
    /// CA:FALSE: a server's own certificate that a client trusts as its
    /// root (the agent's TLS listener's).
    Leaf,
}

/// A self-signed CA:TRUE certificate: [`self_signed`] with [`Role::Ca`].
pub fn self_signed_cert(dir: &Path, name: &str, host: &str, v: Validity) -> (PathBuf, PathBuf) {
    self_signed(dir, name, host, v, Role::Ca)
}

/// A self-signed certificate for `host` (an IP address or a DNS name, in
/// the subjectAltName and the CN) and its key (mode 0600), as
/// `dir/<name>.pem` and `dir/<name>.key`.
pub fn self_signed(
    dir: &Path,
    name: &str,
    host: &str,
    validity: Validity,
    role: Role,
) -> (PathBuf, PathBuf) {
    let constraints = match role {
        Role::Ca => "basicConstraints=critical,CA:TRUE",
        Role::Leaf => "basicConstraints=critical,CA:FALSE",
    };
    let (cert, key) = (format!("{name}.pem"), format!("{name}.key"));
    let san = if host.parse::<std::net::IpAddr>().is_ok() {
        format!("subjectAltName=IP:{host}")
    } else {
        format!("subjectAltName=DNS:{host}")
    };
    let subject = format!("/CN={host}");
    let key_args = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &subject,
        "-addext",
        &san,
        "-addext",
        constraints,
        "-keyout",
        &key,
    ];
    match validity {
        Validity::Current | Validity::Days(_) => {
            let days = match validity {
                Validity::Days(n) => n.to_string(),
                _ => "2".to_owned(),
            };
            let mut args = vec!["req", "-x509", "-days", &days];
            args.extend(key_args);
            args.extend(["-out", &cert]);
            openssl(&args, dir);
        }
        Validity::Expired => {
            // `req -x509` cannot back-date; `ca -selfsign` takes dates.
            let ca = dir.join(format!("{name}.ca"));
            std::fs::create_dir_all(&ca).unwrap();
            std::fs::write(ca.join("index.txt"), "").unwrap();
            std::fs::write(ca.join("serial"), "01\n").unwrap();
            std::fs::write(
                ca.join("ca.cnf"),
                "[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\nnew_certs_dir = .\n\
                 serial = serial\ndefault_md = sha256\npolicy = p\ncopy_extensions = copy\n\
                 [p]\ncommonName = supplied\n",
            )
            .unwrap();
            let key = dir.join(&key);
            let key = key.to_str().unwrap();
            let csr = ca.join("req.csr");
            let csr = csr.to_str().unwrap();
            let mut args = vec!["req", "-new"];
            args.extend(&key_args[..key_args.len() - 1]);
            args.extend([key, "-out", csr]);
            openssl(&args, &ca);
            let out = dir.join(&cert);
            openssl(
                &[
                    "ca",
                    "-batch",
                    "-notext",
                    "-config",
                    "ca.cnf",
                    "-selfsign",
                    "-keyfile",
                    key,
                    "-in",
                    csr,
                    "-startdate",
                    "20200101000000Z",
                    "-enddate",
                    "20200102000000Z",
                    "-out",
                    out.to_str().unwrap(),
                ],
                &ca,
            );
        }
    }
    let key = dir.join(&key);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir.join(cert), key)
}

/// `openssl s_server` on a loopback port with a certificate and key,
/// answering `GET /v1/sys/health` and each `(path?query, JSON body)` the
/// test gives with HTTP/1.0 200 and that body; killed when dropped.
#[derive(Debug)]
pub struct TlsServer {
    child: Child,
    /// Its loopback port.
    pub port: u16,
}

impl TlsServer {
    /// Serve from `dir/www` (made here) with `cert` and `key`.
    pub fn start(dir: &Path, cert: &Path, key: &Path, answers: &[(&str, &str)]) -> TlsServer {
        let www = dir.join("www");
        let health = r#"{"initialized":true,"sealed":false,"standby":false,"version":"tls-test"}"#;
        for (path, body) in [("v1/sys/health", health)].iter().chain(answers) {
            let file = www.join(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(
                file,
                format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
            )
            .unwrap();
        }
        let port = crate::free_port();
        let child = Command::new("openssl")
            .args(["s_server", "-quiet", "-HTTP", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .current_dir(&www)
            // s_server ends at the end of its stdin: kept open by `child`.
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server starts (is openssl installed?)");
        let server = TlsServer { child, port };
        crate::wait_for_port(port, "openssl s_server");
        server
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pinned certificate a store client must refuse, and the words that
/// name why in its error.
#[derive(Debug)]
pub struct RefusedPin {
    pub url: String,
    pub pinned: PathBuf,
    pub problem: &'static str,
}

/// The pinnings a store client must refuse, beside `server` (serving a
/// current self-signed certificate for 127.0.0.1): another self-signed
/// certificate pinned for it, an expired one served and pinned, one for
/// another name served and pinned. Returns the servers it started (kept
/// alive by the caller) and the cases.
pub fn refused_pins(dir: &Path, server: &TlsServer) -> (Vec<TlsServer>, Vec<RefusedPin>) {
    let (other, _) = self_signed_cert(dir, "other", "127.0.0.1", Validity::Current);
    let (old, old_key) = self_signed_cert(dir, "old", "127.0.0.1", Validity::Expired);
    let (named, named_key) = self_signed_cert(dir, "named", "bao.example", Validity::Current);
    let old_server = TlsServer::start(&dir.join("old-server"), &old, &old_key, &[]);
    let named_server = TlsServer::start(&dir.join("named-server"), &named, &named_key, &[]);
    let cases = vec![
        RefusedPin {
            url: server.url(),
            pinned: other,
            problem: "CaUsedAsEndEntity",
        },
        RefusedPin {
            url: old_server.url(),
            pinned: old,
            problem: "it has expired",
        },
        RefusedPin {
            url: named_server.url(),
            pinned: named,
            problem: "it does not name the host in the URL",
        },
    ];
    (vec![old_server, named_server], cases)
}

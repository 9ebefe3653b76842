//! Cluster definitions kept on this machine in `~/.rh/clusters/NAME.json`
//! (file 0600, directory 0700): the node hosts, the SSH user, port and
//! identity file, and the agent's loopback port on the nodes. The cluster
//! named `local` always exists and is never stored: it is the agent on this
//! machine, reached without SSH. This module only reads and writes those
//! definitions; it never connects anywhere and never sees a secret value.
//!
//! Next to each cluster (`local` included) it keeps `NAME.key` (0600): the
//! random fingerprint key `controller status` sends to the nodes for drift
//! detection.

use std::fmt;
use std::path::{Path, PathBuf};

use common::fingerprint::random_hex;
use common::fsutil::{self, PathError};
use common::names::{validate_cluster_name, NameError};
use common::wire::DEFAULT_AGENT_PORT;
use common::SecretText;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The name of the always-present cluster on this machine.
pub const LOCAL: &str = "local";

/// Something wrong with a cluster definition or its file.
#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("unknown cluster {name:?}; known clusters: {known} (add one with `controller cluster add NAME --host HOST`)")]
    NotFound { name: String, known: String },
    #[error("cluster {LOCAL:?} is built in (the agent on this machine) and cannot be {what}")]
    Reserved { what: &'static str },
    #[error("cluster {name:?}: host {host:?} is invalid: {reason}")]
    BadHost {
        name: String,
        host: String,
        reason: &'static str,
    },
    #[error("cluster {name:?} has no hosts")]
    NoHosts { name: String },
    #[error("cluster file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Path(#[from] PathError),
}

/// A cluster as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    /// Node addresses as given: `HOST`, `USER@HOST`, `HOST:PORT`, `[V6]:PORT`.
    pub hosts: Vec<String>,
    /// SSH user (default: ssh's own default, i.e. the local user name or the ssh config).
    #[serde(default)]
    pub user: Option<String>,
    /// SSH port (default 22).
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// SSH private key.
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// The agent's port on the nodes' loopback.
    #[serde(default = "default_agent_port")]
    pub agent_port: u16,
    /// Fleet mode: the nodes pull from the remote store (`crate::fleet`);
    /// hosts are optional and only used by bootstrap over SSH.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pull: bool,
}

fn default_ssh_port() -> u16 {
    22
}

fn default_agent_port() -> u16 {
    DEFAULT_AGENT_PORT
}

/// How to reach one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The agent on this machine (the `local` cluster): no SSH.
    Local,
    /// A node reached over SSH.
    Ssh(SshTarget),
}

/// One SSH node, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub host: String,
    pub user: Option<String>,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub agent_port: u16,
}

/// One node of a cluster: its display name (the host as given) and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub target: Target,
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl Cluster {
    /// The built-in `local` cluster.
    pub fn local() -> Self {
        Self {
            name: LOCAL.into(),
            hosts: vec![LOCAL.into()],
            user: None,
            port: default_ssh_port(),
            identity_file: None,
            agent_port: DEFAULT_AGENT_PORT,
            pull: false,
        }
    }

    /// Whether this is the built-in `local` cluster.
    pub fn is_local(&self) -> bool {
        self.name == LOCAL
    }

    /// Check the name and every host.
    pub fn validate(&self) -> Result<(), ClusterError> {
        validate_cluster_name(&self.name)?;
        if self.hosts.is_empty() && !self.pull {
            return Err(ClusterError::NoHosts {
                name: self.name.clone(),
            });
        }
        if !self.is_local() {
            for host in &self.hosts {
                parse_host(&self.name, host, self.user.as_deref(), self.port)?;
            }
        }
        Ok(())
    }

    /// The nodes, resolved.
    pub fn nodes(&self) -> Result<Vec<Node>, ClusterError> {
        if self.is_local() {
            return Ok(vec![Node {
                name: LOCAL.into(),
                target: Target::Local,
            }]);
        }
        self.hosts
            .iter()
            .map(|h| {
                let (user, host, port) =
                    parse_host(&self.name, h, self.user.as_deref(), self.port)?;
                Ok(Node {
                    name: h.clone(),
                    target: Target::Ssh(SshTarget {
                        host,
                        user,
                        port,
                        identity_file: self.identity_file.clone(),
                        agent_port: self.agent_port,
                    }),
                })
            })
            .collect()
    }
}

/// Split `USER@HOST:PORT` (each part optional but the host; `[v6]:port` for IPv6).
fn parse_host(
    cluster: &str,
    spec: &str,
    default_user: Option<&str>,
    default_port: u16,
) -> Result<(Option<String>, String, u16), ClusterError> {
    let bad = |reason| ClusterError::BadHost {
        name: cluster.into(),
        host: spec.chars().filter(|c| !c.is_control()).collect(),
        reason,
    };
    if spec.is_empty() {
        return Err(bad("it is empty"));
    }
    if spec.starts_with('-') {
        return Err(bad("it starts with '-'"));
    }
    if spec
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '/' | '\'' | '"' | '`'))
    {
        return Err(bad(
            "it contains whitespace, a quote, '/' or a control character",
        ));
    }
    let (user, rest) = match spec.rsplit_once('@') {
        Some((u, r)) if !u.is_empty() => (Some(u.to_owned()), r),
        Some(_) => return Err(bad("the user before '@' is empty")),
        None => (default_user.map(str::to_owned), spec),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("the port is not a number"))?,
            None if after.is_empty() => default_port,
            None => return Err(bad("unexpected text after ']'")),
        };
        (h.to_owned(), port)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse().map_err(|_| bad("the port is not a number"))?,
            ),
            None => (rest.to_owned(), default_port),
        }
    };
    if host.is_empty() || host.starts_with('-') {
        return Err(bad("the host name is empty or starts with '-'"));
    }
    Ok((user, host, port))
}

/// `~/.rh/clusters`.
pub fn clusters_dir(home: &Path) -> PathBuf {
    home.join(".rh").join("clusters")
}

fn cluster_file(home: &Path, name: &str) -> PathBuf {
    clusters_dir(home).join(format!("{name}.json"))
}

/// Save a cluster (replacing one of the same name).
pub fn save(home: &Path, cluster: &Cluster) -> Result<(), ClusterError> {
    if cluster.is_local() {
        return Err(ClusterError::Reserved { what: "replaced" });
    }
    cluster.validate()?;
    let dir = clusters_dir(home);
    fsutil::create_private_dir_all(&dir)?;
    let mut json = serde_json::to_vec_pretty(cluster).expect("a cluster serializes");
    json.push(b'\n');
    fsutil::atomic_write(&cluster_file(home, &cluster.name), &json)?;
    Ok(())
}

/// Load a cluster by name (`local` is built in).
pub fn load(home: &Path, name: &str) -> Result<Cluster, ClusterError> {
    if name == LOCAL {
        return Ok(Cluster::local());
    }
    validate_cluster_name(name)?;
    let path = cluster_file(home, name);
    let text = match fsutil::read_optional(&path)? {
        Some(t) => t,
        None => {
            return Err(ClusterError::NotFound {
                name: name.into(),
                known: list_names(home)?.join(", "),
            })
        }
    };
    let cluster: Cluster =
        serde_json::from_str(text.expose_secret()).map_err(|e| ClusterError::Malformed {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    if cluster.name != name {
        return Err(ClusterError::Malformed {
            path: path.display().to_string(),
            reason: format!("it names cluster {:?}", cluster.name),
        });
    }
    cluster.validate()?;
    Ok(cluster)
}

/// Names of every cluster, `local` first, then the stored ones sorted.
pub fn list_names(home: &Path) -> Result<Vec<String>, ClusterError> {
    let mut names = vec![LOCAL.to_owned()];
    let dir = clusters_dir(home);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(PathError::io("read directory", &dir, e).into()),
    };
    let mut stored: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_owned();
            (validate_cluster_name(&name).is_ok() && name != LOCAL).then_some(name)
        })
        .collect();
    stored.sort();
    names.extend(stored);
    Ok(names)
}

/// Every cluster (`local` first).
pub fn list(home: &Path) -> Result<Vec<Cluster>, ClusterError> {
    list_names(home)?.iter().map(|n| load(home, n)).collect()
}

/// Remove a stored cluster.
pub fn remove(home: &Path, name: &str) -> Result<(), ClusterError> {
    if name == LOCAL {
        return Err(ClusterError::Reserved { what: "removed" });
    }
    load(home, name)?;
    fsutil::remove_file(&cluster_file(home, name))?;
    fsutil::remove_file(&key_file(home, name))?;
    Ok(())
}

/// `~/.rh/clusters/NAME.key` (0600): the cluster's fingerprint key.
fn key_file(home: &Path, name: &str) -> PathBuf {
    clusters_dir(home).join(format!("{name}.key"))
}

/// The cluster's fingerprint key (64 hex digits), created (32 random bytes,
/// file 0600 in the 0700 clusters dir) on first use. `controller status`
/// sends it to every node so their fingerprints compare with each other and
/// with this machine's copy. It is no credential: it only keys fingerprints.
pub fn fingerprint_key(home: &Path, name: &str) -> Result<SecretText, ClusterError> {
    validate_cluster_name(name)?;
    let path = key_file(home, name);
    if let Some(text) = fsutil::read_optional(&path)? {
        let key = text.expose_secret().trim();
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ClusterError::Malformed {
                path: path.display().to_string(),
                reason: "it is not 64 hex digits (delete it: a new key is made on next use)".into(),
            });
        }
        return Ok(SecretText::new(key.to_owned()));
    }
    let dir = clusters_dir(home);
    fsutil::create_private_dir_all(&dir)?;
    let key = SecretText::new(random_hex(32));
    fsutil::atomic_write(&path, key.expose_secret().as_bytes())?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn cluster(hosts: &[&str]) -> Cluster {
        Cluster {
            name: "gpu".into(),
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            user: Some("ubuntu".into()),
            port: 22,
            identity_file: Some("/k".into()),
            agent_port: 32300,
            pull: false,
        }
    }

    #[test]
    fn hosts_parse_user_host_port() {
        let nodes = cluster(&["a", "root@b", "c:2222", "d@[::1]:23", "[fe80::1]"])
            .nodes()
            .unwrap();
        let t = |i: usize| match &nodes[i].target {
            Target::Ssh(t) => (t.user.clone(), t.host.clone(), t.port),
            Target::Local => unreachable!(),
        };
        assert_eq!(t(0), (Some("ubuntu".into()), "a".into(), 22));
        assert_eq!(t(1), (Some("root".into()), "b".into(), 22));
        assert_eq!(t(2), (Some("ubuntu".into()), "c".into(), 2222));
        assert_eq!(t(3), (Some("d".into()), "::1".into(), 23));
        assert_eq!(t(4), (Some("ubuntu".into()), "fe80::1".into(), 22));
        assert_eq!(nodes[2].name, "c:2222");
        for bad in [
            "",
            "-oProxyCommand=x",
            "a b",
            "@h",
            "h:x",
            "[::1",
            "a/b",
            "h:",
        ] {
            assert!(cluster(&[bad]).validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn save_load_list_remove_with_private_modes() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let err = load(h, "gpu").unwrap_err().to_string();
        assert!(
            err.contains("unknown cluster \"gpu\"") && err.contains("local"),
            "{err}"
        );
        save(h, &cluster(&["a", "b"])).unwrap();
        assert_eq!(load(h, "gpu").unwrap(), cluster(&["a", "b"]));
        let file = clusters_dir(h).join("gpu.json");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(clusters_dir(h))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        assert_eq!(list_names(h).unwrap(), vec!["local", "gpu"]);
        assert!(load(h, LOCAL).unwrap().is_local());
        assert!(remove(h, LOCAL).is_err());
        let mut local = Cluster::local();
        local.hosts = vec!["x".into()];
        assert!(save(h, &local).is_err());
        remove(h, "gpu").unwrap();
        assert!(!file.exists());
        assert!(remove(h, "gpu").is_err());
        assert!(load(h, "../x").is_err());
    }

    #[test]
    fn fingerprint_keys_are_private_stable_per_cluster_and_removed_with_it() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        save(h, &cluster(&["a"])).unwrap();
        let key = fingerprint_key(h, "gpu").unwrap();
        assert_eq!(key.expose_secret().len(), 64);
        assert_eq!(fingerprint_key(h, "gpu").unwrap(), key);
        assert_eq!(mode(&clusters_dir(h).join("gpu.key")), 0o600);
        assert_eq!(list_names(h).unwrap(), vec!["local", "gpu"]);
        let local_key = fingerprint_key(h, LOCAL).unwrap();
        assert_ne!(local_key, key);
        assert_eq!(mode(&clusters_dir(h).join("local.key")), 0o600);
        remove(h, "gpu").unwrap();
        assert!(!clusters_dir(h).join("gpu.key").exists());
        std::fs::write(clusters_dir(h).join("local.key"), "short").unwrap();
        assert!(fingerprint_key(h, LOCAL).is_err());
        assert!(fingerprint_key(h, "../x").is_err());
    }
}

//! This node's host name and stable id, the key of its reports
//! (`<state-dir>/pull/node_id`, 0600): made once from the host name, the
//! machine id, the state dir and random bytes, then kept. Reads the machine
//! id and host name; writes only its own file.

use std::path::Path;

use common::fingerprint::fingerprint;
use common::fsutil::{atomic_write, read_optional};

use super::PullError;

fn read_first_line(paths: &[&str]) -> Option<String> {
    paths.iter().find_map(|p| {
        std::fs::read_to_string(p)
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    })
}

/// This node's host name and stable id, kept in `<pull dir>/node_id` from
/// the first start on: the host name (made path-safe) and a hash of the
/// machine id, the state dir (two agents on one machine, as in tests, get
/// two ids) and 16 random bytes (nodes cloned from one image with the same
/// machine id and host name, or containers with none, still get distinct
/// ids; otherwise their reports would overwrite each other and `status`
/// would count one node). A node that ran before ids were kept (it has an
/// `applied.json`) keeps the id it reported under.
pub(super) fn node_identity(
    state_dir: &Path,
    pull_dir: &Path,
) -> Result<(String, String), PullError> {
    let hostname = read_first_line(&["/proc/sys/kernel/hostname", "/etc/hostname"])
        .unwrap_or_else(|| "unknown".into());
    let kept = pull_dir.join("node_id");
    if let Some(id) = read_optional(&kept)?
        .map(|t| t.expose_secret().trim().to_owned())
        .filter(|id| is_node_id(id))
    {
        return Ok((hostname, id));
    }
    let salt = if pull_dir.join("applied.json").exists() {
        String::new()
    } else {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        b.iter().map(|x| format!("{x:02x}")).collect()
    };
    let id = derive_node_id(&hostname, state_dir, &salt);
    atomic_write(&kept, format!("{id}\n").as_bytes())?;
    Ok((hostname, id))
}

/// Whether `id` is what [`derive_node_id`] makes: path-safe, not empty, short.
fn is_node_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// `<host name, path-safe>-<12 hex>` of the machine id, `state_dir` and `salt`
/// (empty: the id agents derived before ids were kept).
fn derive_node_id(hostname: &str, state_dir: &Path, salt: &str) -> String {
    let machine =
        read_first_line(&["/etc/machine-id", "/var/lib/dbus/machine-id"]).unwrap_or_default();
    let mut input = format!("{machine}\n{}", state_dir.display());
    if !salt.is_empty() {
        input.push('\n');
        input.push_str(salt);
    }
    let hash = fingerprint(b"rh-fleet-node-id", input.as_bytes());
    let safe: String = hostname
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    format!("{safe}-{}", &hash[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_kept_distinct_on_cloned_machines_and_path_safe() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Two nodes cloned from one image: same machine id, host name and
        // state dir path; only their own kept files differ.
        let state = Path::new("/home/ubuntu/.rh/agent");
        let (_, a) = node_identity(state, one.path()).unwrap();
        let (_, b) = node_identity(state, two.path()).unwrap();
        assert_ne!(a, b);
        assert!(is_node_id(&a), "{a}");
        // Kept: the same id on the next start, the file private.
        assert_eq!(a, node_identity(state, one.path()).unwrap().1);
        let kept = one.path().join("node_id");
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), format!("{a}\n"));
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&kept).unwrap().permissions()
            ) & 0o777,
            0o600
        );
        // A node from before ids were kept (it applied something) keeps the
        // id it reported under; a kept file that is not an id is replaced.
        let old = tempfile::tempdir().unwrap();
        std::fs::write(old.path().join("applied.json"), "{}").unwrap();
        std::fs::write(old.path().join("node_id"), "../../etc\n").unwrap();
        let (host, c) = node_identity(state, old.path()).unwrap();
        assert_eq!(c, derive_node_id(&host, state, ""));
    }
}

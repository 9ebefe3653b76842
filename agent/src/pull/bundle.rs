//! The node bundle a pulling agent starts from (`--pull BUNDLE`): taken
//! only when private to this user, of a format this agent reads, with safe
//! names and paths and a well-formed report key; its store URLs checked as
//! the HTTP client reads them, plain `http://` off this machine only when
//! the node's own config allows it. Never logs or echoes the secret_id or
//! wrapping token it holds.

use std::path::Path;

use common::fleet::{self, Bundle};

use super::PullError;

/// Read and check a bundle file.
pub(super) fn load_bundle(path: &Path) -> Result<Bundle, PullError> {
    let shown = path.display().to_string();
    let bad = |reason: String| PullError::Bundle {
        path: shown.clone(),
        reason,
    };
    let read = match common::fsutil::FileRef::anywhere(path)?.open(false)? {
        Some(file) => file.read_with_sig()?,
        None => None,
    };
    let (text, sig) = read.ok_or_else(|| bad("no such file".into()))?;
    // Like a TLS key: a secret_id (or the wrapping token around one) that
    // others can read is not this node's alone, and one others can write
    // can be swapped for another store or cluster.
    if !sig.is_private() {
        return Err(bad(format!(
            "it is readable or writable by group or others: run `chmod 600 {shown}` (and \
             consider it leaked: revoke it and enroll this node again)"
        )));
    }
    let bundle: Bundle = serde_json::from_str(text.expose_secret()).map_err(|e| {
        bad(format!(
            "not a bundle (line {} column {})",
            e.line(),
            e.column()
        ))
    })?;
    if bundle.format != fleet::BUNDLE_FORMAT {
        return Err(bad(format!(
            "format {} (this agent reads format {}): {}",
            bundle.format,
            fleet::BUNDLE_FORMAT,
            if bundle.format > fleet::BUNDLE_FORMAT {
                "written by a newer controller; upgrade this node's agent"
            } else {
                "not a bundle format any controller wrote"
            }
        )));
    }
    if !bundle.unknown.is_empty() {
        let names: Vec<&str> = bundle.unknown.keys().map(String::as_str).collect();
        tracing::info!(fields = ?names, "bundle fields this agent does not know are ignored (written by a newer controller)");
    }
    if bundle.urls.is_empty() {
        return Err(bad("it names no store URL".into()));
    }
    common::names::validate_cluster_name(&bundle.cluster).map_err(|e| bad(e.to_string()))?;
    let safe = |s: &str| {
        !s.is_empty()
            && !s
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    };
    if !safe(&bundle.mount) || !safe(&bundle.prefix) || !safe(&bundle.auth_mount) {
        return Err(bad(
            "its mount, prefix or auth mount is not a safe path".into()
        ));
    }
    if bundle
        .name
        .as_deref()
        .is_some_and(|n| !fleet::is_bundle_name(n))
    {
        return Err(bad("its name is not a bundle name".into()));
    }
    match (&bundle.bundle_id, &bundle.report_key) {
        (None, None) => {}
        (Some(id), Some(key))
            if fleet::is_bundle_id(id)
                && key
                    .expose_str()
                    .is_some_and(|k| k.len() == 64 && hex::decode(k).is_ok()) => {}
        _ => {
            return Err(bad(
                "its bundle_id and report_key are not a bundle id and a 64-hex-digit key".into(),
            ))
        }
    }
    Ok(bundle)
}

/// The bundle's store URLs as the HTTP client reads them
/// (`common::store_url`, the same check as the controller's): a URL that
/// reads otherwise than written (`" http://h"`, `http:h`, `\\`, `h\@127.0.0.1`,
/// `127.1`), or with credentials, a query or a fragment, is refused; so is
/// plain `http://` to a host that is not loopback unless the node's config
/// allows it (`pull_allow_insecure_http`): the node's secret_id and tokens
/// would cross the network in cleartext. Decided here, on the node, not by
/// the bundle.
pub(super) fn check_urls(
    bundle: &Bundle,
    path: &Path,
    allowed: bool,
) -> Result<Vec<String>, PullError> {
    let bad = |reason: String| PullError::Bundle {
        path: path.display().to_string(),
        reason,
    };
    let mut urls = Vec::with_capacity(bundle.urls.len());
    for text in &bundle.urls {
        let url = common::store_url::parse(text).map_err(|e| {
            bad(format!(
                "store URL {:?} is not valid: {e}",
                common::store_url::shown(text)
            ))
        })?;
        if url.is_cleartext_to_network() {
            if !allowed {
                return Err(bad(format!(
                    "store URL {:?} is plain http:// to a host that is not loopback: this node's \
                     secret_id and tokens would cross the network in cleartext; use https://, \
                     or set `pull_allow_insecure_http: true` in the agent config",
                    url.as_str()
                )));
            }
            tracing::warn!(url = %url, "store tokens go over plain http (pull_allow_insecure_http)");
        }
        urls.push(url.as_str().to_owned());
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Write a bundle file as enroll does (0600).
    fn write_private(path: &Path, text: &str) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }

    #[test]
    fn bundles_others_can_read_or_write_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let good = serde_json::json!({
            "format": 1, "cluster": "gpu", "urls": ["http://127.0.0.1:1"],
            "mount": "secret", "prefix": "rh/a", "auth_mount": "approle", "role_id": "r",
            "secret_id": "launch-sid-never-shown"
        });
        let path = dir.path().join("launch.json");
        write_private(&path, &good.to_string());
        assert!(load_bundle(&path).is_ok());
        for mode in [0o644, 0o666, 0o640, 0o604, 0o620, 0o602] {
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .unwrap();
            let err = load_bundle(&path).unwrap_err().to_string();
            assert!(
                err.contains("readable or writable by group or others"),
                "{mode:o}: {err}"
            );
            assert!(err.contains("chmod 600"), "{err}");
            assert!(!err.contains("never-shown"), "{err}");
        }
        // A bundle id and report key come together, well formed.
        let mut signed = good.clone();
        signed["bundle_id"] = "0123456789abcdef".into();
        signed["report_key"] = "ab".repeat(32).into();
        signed["name"] = "node-3".into();
        write_private(&path, &signed.to_string());
        assert!(load_bundle(&path).is_ok());
        for (field, value) in [
            ("report_key", serde_json::json!("not-hex")),
            ("bundle_id", serde_json::json!("../x")),
            ("name", serde_json::json!("node 3\u{1b}")),
        ] {
            let mut bad = signed.clone();
            bad[field] = value;
            write_private(&path, &bad.to_string());
            assert!(load_bundle(&path).is_err(), "{field}");
        }
    }

    #[test]
    fn bundles_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.json");
        write_private(&path, "{}");
        assert!(matches!(load_bundle(&path), Err(PullError::Bundle { .. })));
        let good = serde_json::json!({
            "format": 1, "cluster": "gpu", "urls": ["http://127.0.0.1:1"],
            "mount": "secret", "prefix": "rh/a", "auth_mount": "approle", "role_id": "r",
            "wrapped_secret_id": "hvs.x"
        });
        write_private(&path, &good.to_string());
        assert!(load_bundle(&path).is_ok());
        // A field a newer controller added is ignored (by name; its value is
        // not kept); a newer format is refused, naming the upgrade.
        let mut newer = good.clone();
        newer["future_knob"] = serde_json::json!({"nested": ["hvs.future-secret"]});
        write_private(&path, &newer.to_string());
        let b = load_bundle(&path).unwrap();
        assert_eq!(b.unknown.keys().collect::<Vec<_>>(), ["future_knob"]);
        assert_eq!(b.urls, ["http://127.0.0.1:1"]);
        assert!(!format!("{b:?}").contains("future-secret"));
        newer["format"] = 2.into();
        write_private(&path, &newer.to_string());
        let err = load_bundle(&path).unwrap_err().to_string();
        assert!(err.contains("format 2") && err.contains("upgrade"), "{err}");
        let mut zero = good.clone();
        zero["format"] = 0.into();
        write_private(&path, &zero.to_string());
        assert!(load_bundle(&path).is_err());
        let mut bad = good.clone();
        bad["prefix"] = "rh/../x".into();
        write_private(&path, &bad.to_string());
        let err = load_bundle(&path).unwrap_err().to_string();
        assert!(err.contains("not a safe path"), "{err}");
        assert!(!err.contains("hvs.x"));

        // Plain http to a store that is not loopback: refused unless the
        // node's own config allows it; https and loopback always pass.
        let mut remote = good.clone();
        remote["urls"] = serde_json::json!(["https://10.0.0.1:8200", "http://10.0.0.2:8200"]);
        write_private(&path, &remote.to_string());
        let bundle = load_bundle(&path).unwrap();
        let err = check_urls(&bundle, &path, false).unwrap_err().to_string();
        assert!(
            err.contains("http://10.0.0.2:8200") && err.contains("pull_allow_insecure_http"),
            "{err}"
        );
        assert!(!err.contains("hvs.x"));
        assert!(check_urls(&bundle, &path, true).is_ok());
        let loopback = load_bundle(&path)
            .map(|mut b| {
                b.urls = vec![
                    "http://127.0.0.1:8200".into(),
                    "https://10.0.0.1:8200".into(),
                ];
                b
            })
            .unwrap();
        assert_eq!(
            check_urls(&loopback, &path, false).unwrap(),
            ["http://127.0.0.1:8200", "https://10.0.0.1:8200"]
        );
        // Decided on the URL as the client reads it: none of these reaches
        // a loopback host, and each read as loopback by a string test.
        for tricky in [
            " http://10.0.0.2:8200",
            "http:10.0.0.2:8200",
            "http://10.0.0.2:8200\\@127.0.0.1",
            "HTTP:\\\\10.0.0.2",
            "http://127.0.0.1@10.0.0.2",
            "http://127.0.0.1:8200@10.0.0.2:8200",
            "http://10.0.0.2#@127.0.0.1",
            "http://localhost.:8200",
            "http://10.0.0.2/@127.0.0.1",
        ] {
            let mut b = loopback.clone();
            b.urls = vec!["https://10.0.0.1:8200".into(), tricky.into()];
            let err = check_urls(&b, &path, false).unwrap_err().to_string();
            assert!(err.contains("store URL"), "{tricky:?}: {err}");
        }
        // Loopback spelled as the client spells it passes; other spellings
        // of it are refused with the client's reading.
        for ok in [
            "http://[::1]:8200",
            "http://localhost:8200",
            "http://127.0.0.1:8200/",
        ] {
            let mut b = loopback.clone();
            b.urls = vec![ok.into()];
            assert!(check_urls(&b, &path, false).is_ok(), "{ok}");
        }
        let mut b = loopback.clone();
        b.urls = vec!["http://127.1:8200".into()];
        let err = check_urls(&b, &path, false).unwrap_err().to_string();
        assert!(err.contains("reads it as http://127.0.0.1:8200"), "{err}");
    }
}

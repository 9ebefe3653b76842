//! What this node holds, for `GET /v1/status`: every installed secret with
//! its paths, keys and var names under keyed fingerprints. Never a value.

use common::fingerprint::{value_fingerprint, values_fingerprint, FingerprintKey};
use common::wire::{InstalledFile, InstalledSecret, InstalledVar};

use crate::state::AppState;

/// What every secret installed, with keyed fingerprints and no values.
///
/// Under the node's key (`key` is `None`) file and var fingerprints are the
/// ones recorded at install time. Under a caller's key, a file's fingerprint
/// is over the values the secret wrote there (as recorded) and a var's is
/// over the value the env holds now (only its fingerprint was recorded);
/// a var no longer set in its env gets an empty fingerprint. Both use the
/// canonical encodings of `common::fingerprint`, so a caller holding the same
/// values computes the same fingerprints.
pub(crate) fn installed_status(
    state: &AppState,
    key: Option<&FingerprintKey>,
) -> Vec<InstalledSecret> {
    let file_key = key.map_or_else(|| state.fingerprint_key(), FingerprintKey::as_bytes);
    let installed = state.installed();
    installed
        .secrets
        .iter()
        .map(|(name, record)| InstalledSecret {
            name: name.clone(),
            provider: record.provider.clone(),
            files: record
                .files
                .iter()
                .flat_map(|install| {
                    let keys: Vec<String> = install.values.keys().cloned().collect();
                    let fp = values_fingerprint(file_key, &install.values);
                    install.paths.iter().map(move |path| InstalledFile {
                        path: path.clone(),
                        keys: keys.clone(),
                        fingerprint: fp.clone(),
                    })
                })
                .collect(),
            vars: record
                .vars
                .iter()
                .map(|v| InstalledVar {
                    env: v.env.clone(),
                    var: v.var.clone(),
                    fingerprint: match key {
                        None => v.fingerprint.clone(),
                        Some(key) => state
                            .inner
                            .envs
                            .value(&v.env, &v.var)
                            .map(|value| value_fingerprint(key.as_bytes(), &value))
                            .unwrap_or_default(),
                    },
                })
                .collect(),
        })
        .collect()
}

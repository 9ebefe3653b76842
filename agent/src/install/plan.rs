//! Checking what a call asks before anything is written: each item's
//! placement (sent and verified against its secret, or placed here), its
//! values (data only when they came from the store), its env vars and its
//! files, each file asked of the placement policy
//! (`common::policy::Policy::may_write`: the path, confined to home, and
//! its resolved target). Writes nothing; errors name secrets, paths, envs
//! and vars, never a value.

use std::collections::BTreeMap;

use common::apply::TargetFile;
use common::names::validate_secret_name;
use common::placement::{place, verify, PlaceError, PlaceOpts, PlacedEnv, Placement};
use common::policy::{Origin, Policy, Reach};
use common::providers::{self, Provider};
use common::wire::SyncItem;
use common::{Secret, SecretValue};

use super::error::InstallError;
use crate::config::Config;
use crate::state::AppState;

/// One secret, checked and ready to apply.
pub(crate) struct Planned {
    pub(crate) secret: Secret,
    pub(super) provider: &'static dyn Provider,
    pub(super) files: Option<Vec<TargetFile>>,
    pub(super) env: Option<(String, BTreeMap<String, SecretValue>)>,
    /// Recorded as what `secret` installed (not for vars set without a
    /// secret's name).
    pub(super) record: bool,
    /// Whether it names the provider of what `secret` installed (not for
    /// vars set by name alone: a secret's files keep their provider).
    pub(super) sets_provider: bool,
    /// For an item with files: the keyed hash of what decides them
    /// (`crate::verified`), and whether they were found as last verified
    /// (then they are not read again: the item's files are unchanged).
    pub(super) key: Option<String>,
    pub(super) verified: bool,
}

impl Planned {
    /// Display paths of the files it writes.
    pub(crate) fn paths(&self) -> Vec<String> {
        self.files
            .iter()
            .flatten()
            .map(|f| f.display.clone())
            .collect()
    }

    /// The env and var names it sets.
    pub(crate) fn env_vars(&self) -> Option<(String, Vec<String>)> {
        self.env
            .as_ref()
            .map(|(e, vars)| (e.clone(), vars.keys().cloned().collect()))
    }
}

/// This agent's placement policy: its state dir is reserved (as configured
/// and resolved), its config's `allow_paths` open more places to remote
/// secrets and its `allow_vars` more env vars. Built once, when the state is
/// opened (the state dir exists then).
pub(crate) fn policy(config: &Config) -> Policy {
    let mut reserved = vec![config.state_dir.clone()];
    reserved.extend(config.state_dir.canonicalize().ok());
    Policy {
        reserved,
        allow: config.allow_paths.clone(),
        allow_vars: config.allow_vars.clone(),
    }
}

/// Check one item of a request (`POST /v1/sync`, a pulled secret): its
/// placement as sent (untrusted: verified against the secret), or, in the
/// older form, placed here by [`PlaceOpts::request`]. Secrets pulled from
/// the store pass [`Origin::Remote`]: their paths must also lie in the
/// provider's credential locations or the config's `allow_paths`, their
/// values carry data only (`program_not_allowed`: a kube user's `exec`,
/// AWS `credential_process`...; a kubeconfig's `current-context` is dropped),
/// and they set only their provider's env vars or the config's `allow_vars`
/// (`var_not_allowed`). A caller holding this agent's token passes
/// [`Origin::Local`], so the deny-list and the state dir apply but not the
/// provider-locations rule (the token already grants the node user's power
/// through `/run`).
pub(crate) fn plan_item(
    state: &AppState,
    item: SyncItem,
    origin: Origin,
) -> Result<Planned, InstallError> {
    validate_secret_name(&item.secret.name)?;
    let placement = match item.placement {
        Some(placement) => {
            if item.path.is_some() || item.env.is_some() {
                return Err(InstallError::Placement {
                    secret: item.secret.name,
                    reason: "give a placement or path/env, not both",
                });
            }
            if placement.is_empty() || placement.env.as_ref().is_some_and(|e| e.vars.is_empty()) {
                return Err(InstallError::Placement {
                    secret: item.secret.name,
                    reason: "the placement places nothing (no file, or an env without vars)",
                });
            }
            verify(&item.secret, &placement)?;
            placement
        }
        None => {
            let opts = PlaceOpts::request(item.path.as_deref(), item.env.as_deref(), false);
            let placement = place(&item.secret, &opts)?;
            if placement.is_empty() {
                return Err(PlaceError::NoVars {
                    secret: item.secret.name,
                }
                .into());
            }
            placement
        }
    };
    checked(state, item.secret, &placement, origin)
}

/// Check one secret to write into its file(s) (`_write_to_file`): at `path`
/// when given, else its own or its provider's file.
pub(crate) fn plan_file(
    state: &AppState,
    secret: Secret,
    path: Option<&str>,
) -> Result<Planned, InstallError> {
    validate_secret_name(&secret.name)?;
    let placement = place(&secret, &PlaceOpts::request(path, None, true))?;
    checked(state, secret, &placement, Origin::Local)
}

/// Check vars to set in `env` (`_set_env_vars`), recorded under `secret`
/// when named: the same item as a sync's, a secret whose values are the
/// vars themselves.
pub(crate) fn plan_vars(
    state: &AppState,
    env: &str,
    vars: BTreeMap<String, SecretValue>,
    secret: Option<String>,
) -> Result<Planned, InstallError> {
    let placement = Placement {
        files: vec![],
        env: Some(PlacedEnv {
            env: env.to_owned(),
            vars: vars.keys().map(|k| (k.clone(), k.clone())).collect(),
        }),
    };
    let record = secret.is_some();
    let secret = Secret::base(secret.unwrap_or_default(), vars);
    verify(&secret, &placement)?;
    if record {
        validate_secret_name(&secret.name)?;
    }
    let mut planned = checked(state, secret, &placement, Origin::Local)?;
    planned.record = record;
    planned.sets_provider = false;
    Ok(planned)
}

/// The node's own checks of a placement (`place`d here or `verify`d): values
/// of remote origin data only, files confined to home and allowed by the
/// policy, vars allowed by it. Nothing is written before all of them pass.
fn checked(
    state: &AppState,
    mut secret: Secret,
    placement: &Placement,
    origin: Origin,
) -> Result<Planned, InstallError> {
    let provider = providers::for_secret(secret.provider.as_deref());
    let inner = &state.inner;
    let file = placement.files.first().map(|f| f.path.as_str());
    common::policy::data_only(
        secret.provider.as_deref(),
        &secret.name,
        file,
        &mut secret.values,
        origin,
    )?;
    if let Some(placed) = &placement.env {
        for var in placed.vars.keys() {
            inner
                .policy
                .check_env_var(secret.provider.as_deref(), &secret.name, var, origin)?;
        }
    }
    let key = (!placement.files.is_empty())
        .then(|| crate::verified::item_key(state.fingerprint_key(), &secret, placement, origin));
    let hit = key.as_deref().and_then(|key| {
        inner
            .verified
            .hit(&inner.config.home, &secret.name, key, placement)
    });
    let verified = hit.is_some();
    let files = if placement.files.is_empty() {
        None
    } else if hit.is_some() {
        hit
    } else {
        let (home, canon_home) = (&inner.config.home, &inner.canon_home);
        let files = placement.files.iter().map(|file| {
            let reach = Reach::Home;
            inner
                .policy
                .may_write(home, canon_home, &secret, &file.path, origin, reach)
        });
        Some(files.collect::<Result<Vec<_>, _>>()?)
    };
    let env = placement
        .env
        .as_ref()
        .map(|placed| (placed.env.clone(), placement.env_values(&secret)));
    Ok(Planned {
        secret,
        provider,
        files,
        env,
        record: true,
        sets_provider: true,
        key,
        verified,
    })
}

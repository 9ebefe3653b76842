//! The secrets on this machine, gathered in one place for every command:
//! the saved secrets of `~/.rh/secrets` (a provider secret saved without
//! values, the reference shape, gets them from its file or env vars) and
//! the provider secrets detected in default files, env vars and `~/.ssh`.
//! A saved secret wins over a detected one of the same name. Detection
//! warnings and errors name secrets and files, never values; nothing here
//! prints or logs a value.

use std::collections::BTreeMap;

use common::extract::{self, Detected, Sources};
use common::providers::ProviderError;
use common::store::{self, StoreError};
use common::Secret;
use thiserror::Error;

use crate::exit::UsageError;
use crate::mint::SessionSecret;
use crate::Context;
use common::session::SessionKind;

/// A saved secret that cannot be read, or whose values cannot be found.
#[derive(Debug, Error)]
pub enum LocalSecretsError {
    #[error("read the saved secrets: {0}")]
    Store(#[from] StoreError),
    #[error("read the values of saved secret {name:?}: {source}")]
    Fill {
        name: String,
        #[source]
        source: ProviderError,
    },
}

/// Every secret this machine knows: saved ones and detected ones, and the
/// session secrets (`crate::mint`: saved with `--session`, or AWS profiles
/// without static keys), which have no values here: they are minted.
#[derive(Debug, Default)]
pub struct LocalSecrets {
    saved: Vec<Secret>,
    detected: Vec<Secret>,
    sessions: Vec<SessionSecret>,
}

/// The saved session secrets, then the detected ones whose name no saved
/// or detected secret has (`taken`).
pub fn sessions(ctx: &Context, taken: &dyn Fn(&str) -> bool) -> Vec<SessionSecret> {
    let mut out: Vec<SessionSecret> = store::list_sessions(&ctx.home)
        .into_iter()
        .filter_map(|(name, provider, spec)| {
            Some(SessionSecret {
                name,
                kind: SessionKind::of_provider(&provider)?,
                spec,
            })
        })
        .collect();
    for d in crate::mint::detect(ctx) {
        if !taken(&d.name) && !out.iter().any(|s| s.name == d.name) {
            out.push(d);
        }
    }
    out
}

/// Run `f` with the sources of `ctx`: its home and its environment.
pub(crate) fn with_sources<T>(ctx: &Context, f: impl FnOnce(&Sources<'_>) -> T) -> T {
    let env = |name: &str| ctx.var(name).map(str::to_owned);
    f(&Sources {
        home: &ctx.home,
        env: &env,
    })
}

/// The provider secrets detected on this machine (`only`: these provider
/// ids; empty for all), with what could not be read.
pub fn detect(ctx: &Context, only: &[String]) -> Detected {
    with_sources(ctx, |src| extract::detect(src, only))
}

/// Fill a saved reference secret's values from its file or env vars.
fn fill(ctx: &Context, secret: &mut Secret) -> Result<(), LocalSecretsError> {
    with_sources(ctx, |src| extract::fill_values(src, secret)).map_err(|source| {
        LocalSecretsError::Fill {
            name: secret.name.clone(),
            source,
        }
    })
}

/// The saved secret `name` (values filled in), else the detected one.
/// Reads only that saved file, and detects only when it is not saved.
pub fn one(ctx: &Context, name: &str) -> Result<Option<Secret>, LocalSecretsError> {
    match store::load(&ctx.home, name) {
        // A session secret has no values to fill (its provider's env vars
        // are not its values).
        Ok(secret)
            if store::list_sessions(&ctx.home)
                .iter()
                .any(|(n, _, _)| n == name) =>
        {
            Ok(Some(secret))
        }
        Ok(mut secret) => {
            fill(ctx, &mut secret)?;
            Ok(Some(secret))
        }
        Err(StoreError::NotFound { .. }) => Ok(detect(ctx, &[])
            .secrets
            .into_iter()
            .find(|s| s.name == name)),
        Err(e) => Err(e.into()),
    }
}

/// Print detection warnings on stderr (they name files, never values).
fn warn(detected: &Detected) {
    for w in &detected.warnings {
        eprintln!("warning: {w}");
    }
}

impl LocalSecrets {
    /// Read the saved secrets (values filled in) and detect the others;
    /// detection warnings go to stderr. No network.
    pub fn load(ctx: &Context) -> Result<Self, LocalSecretsError> {
        let session_names: Vec<String> = store::list_sessions(&ctx.home)
            .into_iter()
            .map(|(n, _, _)| n)
            .collect();
        let mut saved = store::list(&ctx.home)?;
        saved.retain(|s| !session_names.contains(&s.name));
        for s in &mut saved {
            fill(ctx, s)?;
        }
        let found = detect(ctx, &[]);
        warn(&found);
        let taken = |name: &str| saved.iter().chain(&found.secrets).any(|s| s.name == name);
        let sessions = sessions(ctx, &taken);
        Ok(Self {
            saved,
            detected: found.secrets,
            sessions,
        })
    }

    /// From secrets already gathered (tests, or nothing when loading failed).
    pub fn new(saved: Vec<Secret>, detected: Vec<Secret>) -> Self {
        Self {
            saved,
            detected,
            sessions: vec![],
        }
    }

    /// The session secrets of a `--secret` selection (every one when none
    /// is named).
    pub fn select_sessions(&self, wanted: &[String]) -> Vec<SessionSecret> {
        self.sessions
            .iter()
            .filter(|s| wanted.is_empty() || wanted.contains(&s.name))
            .cloned()
            .collect()
    }

    /// Whether `name` is a session secret here.
    pub fn is_session(&self, name: &str) -> bool {
        self.sessions.iter().any(|s| s.name == name)
    }

    /// Whether `name` is saved in `~/.rh/secrets`.
    pub fn is_saved(&self, name: &str) -> bool {
        self.saved.iter().any(|s| s.name == name)
    }

    /// The secret named `name`: saved, else detected.
    pub fn get(&self, name: &str) -> Option<&Secret> {
        self.saved
            .iter()
            .find(|s| s.name == name)
            .or_else(|| self.detected.iter().find(|s| s.name == name))
    }

    /// A saved name, else a detected secret's name, else a detected provider id.
    pub fn find(&self, wanted: &str) -> Option<Secret> {
        self.get(wanted)
            .or_else(|| {
                self.detected
                    .iter()
                    .find(|s| s.provider.as_deref() == Some(wanted))
            })
            .cloned()
    }

    /// Every secret once, by name; saved wins on a name clash.
    pub fn all(&self) -> Vec<Secret> {
        let mut by_name: BTreeMap<&str, &Secret> = BTreeMap::new();
        for s in self.detected.iter().chain(self.saved.iter()) {
            by_name.insert(&s.name, s);
        }
        by_name.into_values().cloned().collect()
    }

    /// The `--secret` selection: every secret when none is named.
    pub fn select(&self, wanted: &[String]) -> anyhow::Result<Vec<Secret>> {
        if wanted.is_empty() {
            Ok(self.all())
        } else {
            self.resolve(wanted)
        }
    }

    /// Resolve `--secret` arguments (all of them, or a usage error naming
    /// the unknown ones and the known names).
    pub fn resolve(&self, wanted: &[String]) -> anyhow::Result<Vec<Secret>> {
        let mut out: Vec<Secret> = vec![];
        let mut unknown = vec![];
        for w in wanted {
            match self.find(w) {
                Some(s) if out.iter().any(|o| o.name == s.name) => {}
                Some(s) => out.push(s),
                None if self.is_session(w) => {}
                None => unknown.push(w.clone()),
            }
        }
        if !unknown.is_empty() {
            let known: Vec<String> = self
                .all()
                .into_iter()
                .map(|s| s.name)
                .chain(self.sessions.iter().map(|s| s.name.clone()))
                .collect();
            return Err(UsageError(format!(
                "unknown secret(s) {}: not saved (`controller secret list`) nor detected (`controller secret detect`); known: {}",
                unknown.join(", "),
                if known.is_empty() { "none".into() } else { known.join(", ") }
            ))
            .into());
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::secret_value::values_from;
    use std::path::Path;

    fn ctx_with(home: &Path, env: &[(&str, &str)]) -> Context {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Context::for_home(home, env)
    }

    #[test]
    fn saved_wins_and_a_provider_id_finds_the_detected_secret() {
        let mut det = Secret::base("aws", values_from([("access_key", "detected")]));
        det.provider = Some("aws".into());
        let mut saved = det.clone();
        saved.values = values_from([("access_key", "saved")]);
        let mut hf = Secret::base("hf-main", values_from([("token", "x")]));
        hf.provider = Some("huggingface".into());
        let local = LocalSecrets::new(vec![saved], vec![det, hf]);
        let all = local.all();
        assert_eq!(all.len(), 2);
        let aws = all.iter().find(|s| s.name == "aws").unwrap();
        assert_eq!(aws.values["access_key"].expose_str(), Some("saved"));
        assert_eq!(
            local.get("aws").unwrap().values["access_key"].expose_str(),
            Some("saved")
        );
        assert!(local.is_saved("aws") && !local.is_saved("hf-main"));
        assert_eq!(local.find("huggingface").unwrap().name, "hf-main");
        let err = local.resolve(&["nope".into()]).unwrap_err();
        assert!(err.downcast_ref::<UsageError>().is_some());
        let err = err.to_string();
        assert!(err.contains("nope") && err.contains("aws"), "{err}");
    }

    #[test]
    fn a_saved_reference_gets_its_values_from_the_environment_everywhere() {
        let home = tempfile::tempdir().unwrap();
        // Saved without values: the values live in OPENAI_API_KEY.
        let mut reference = Secret::base("oa", Default::default());
        reference.provider = Some("openai".into());
        reference.env_vars = Some([("api_key".to_string(), "OPENAI_API_KEY".to_string())].into());
        store::save(home.path(), &reference).unwrap();
        let ctx = ctx_with(home.path(), &[("OPENAI_API_KEY", "sk-ref-value-1")]);
        let by_one = one(&ctx, "oa").unwrap().unwrap();
        assert_eq!(
            by_one.values["api_key"].expose_str(),
            Some("sk-ref-value-1")
        );
        let local = LocalSecrets::load(&ctx).unwrap();
        let got = local.get("oa").unwrap();
        assert_eq!(got.values["api_key"].expose_str(), Some("sk-ref-value-1"));
        assert!(local.all().iter().all(|s| !s.values.is_empty()));
        // Not saved: the detected one.
        let detected = one(&ctx, "openai").unwrap().unwrap();
        assert_eq!(detected.provider.as_deref(), Some("openai"));
        assert!(one(&ctx, "none-such").unwrap().is_none());
    }
}

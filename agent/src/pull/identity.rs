//! Workload identity of a pulling node (`controller cluster federate`): on
//! its poll, when due, the node reads its cluster's federation document
//! (`common::identity::Federation`), fetches one identity token per cloud
//! named there (`identity/oidc/token/<cluster role>-<cloud>`, signed by the
//! store, `sub` the cluster's), writes each atomically to a 0600 file under
//! `<state-dir>/identity/` (only a well-formed token, and only once every
//! cloud's token was fetched: a failure leaves the last good files), and
//! wires the clouds' own SDKs to those files, so the SDK calls STS itself:
//!
//! - AWS: `role_arn`, `web_identity_token_file` and `role_session_name` (the
//!   node id, for CloudTrail; the node's own assertion, not a signed claim)
//!   in the document's profile of `~/.aws/config`, and `AWS_ROLE_ARN`,
//!   `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_SESSION_NAME` in env processes;
//! - GCP: an `external_account` configuration (`<state-dir>/identity/
//!   gcp.json`, its `credential_source` a `file`, never `executable`; its
//!   `token_url` and impersonation URL from this node's config, not the
//!   store) and `GOOGLE_APPLICATION_CREDENTIALS` in env processes;
//! - Azure: `AZURE_FEDERATED_TOKEN_FILE`, `AZURE_CLIENT_ID`,
//!   `AZURE_TENANT_ID` in env processes.
//!
//! The env process vars are ambient (below each env's own vars, not saved).
//! Every path is this node's (its state dir, its home's `~/.aws/config`);
//! the document only names identifiers, each allow-listed
//! (`Federation::validate`): a store writer cannot point a file elsewhere or
//! make anything run. Tokens are refreshed before half their TTL is gone
//! (at a random point of its second quarter, so a fleet booted together
//! does not refresh together); a cluster that is not federated is asked
//! again every [`ABSENT_RECHECK`]. Errors are kept
//! (with their time) for the node report; no token reaches a log, an error,
//! a report or `status`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::formats::ini::IniDoc;
use common::fsutil::{atomic_write, create_private_dir_all};
use common::identity::{self, Cloud, Federation, IdentityStatus};
use common::openbao::{self, Call, Method};
use common::SecretText;
use serde::Deserialize;

use super::metrics::Metrics;
use super::node::Node;
use super::poller::Puller;
use super::schedule::{backoff, jitter};
use super::{now_unix, PullError};
use crate::config::IdentityConfig;
use crate::state::AppState;

/// How often a node whose cluster is not federated reads the document again
/// (±50%): a cluster federated after its nodes booted gets tokens within
/// this; 10,000 such nodes read 17 documents a second.
pub(crate) const ABSENT_RECHECK: Duration = Duration::from_secs(600);

fn failed(what: impl Into<String>) -> PullError {
    PullError::Identity(what.into())
}

/// A node's identity state: what was fetched and wired, when to look again.
pub(crate) struct Refresher {
    opts: IdentityConfig,
    /// `<state-dir>/identity` (`None`: a simulated node without a home).
    dir: Option<PathBuf>,
    /// The node user's home (`~/.aws/config`), `None` when simulated.
    home: Option<PathBuf>,
    /// The AWS role session name: the node id, as AWS allows it.
    session: String,
    /// The federation the files and vars were wired for.
    wired: Option<Federation>,
    next_at: Instant,
    failures: u32,
    status: IdentityStatus,
    /// Whether the cluster was found federated (reports carry a status).
    federated: bool,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("federated", &self.federated)
            .field("status", &self.status)
            .finish()
    }
}

impl Refresher {
    /// A refresher for a node with state dir `state_dir` (files under
    /// `identity/`) and home `home` (`None`: no SDK wiring, as in the
    /// simulator), due at once.
    pub(crate) fn new(
        opts: IdentityConfig,
        state_dir: Option<&Path>,
        home: Option<PathBuf>,
        node_id: &str,
    ) -> Self {
        let session: String = format!("rh-{node_id}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        Self {
            opts,
            dir: state_dir.map(|d| d.join("identity")),
            home,
            session,
            wired: None,
            next_at: Instant::now(),
            failures: 0,
            status: IdentityStatus::default(),
            federated: false,
        }
    }

    /// Refresh on the next poll (the cluster's federation changed).
    pub(crate) fn refresh_now(&mut self) {
        self.next_at = Instant::now();
    }

    fn due(&self) -> bool {
        self.opts.enabled && Instant::now() >= self.next_at
    }

    /// What the node report says (`None`: not federated, nothing to say).
    pub(crate) fn report(&self) -> Option<IdentityStatus> {
        (self.federated || self.status.last_error.is_some()).then(|| self.status.clone())
    }

    fn token_file(&self, cloud: Cloud) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{}.jwt", cloud.as_str())))
    }

    /// The vars env processes get for `fed` (paths under this node's state dir).
    fn env_vars(&self, fed: &Federation) -> BTreeMap<String, String> {
        let mut vars = BTreeMap::new();
        let (Some(dir), true) = (&self.dir, self.home.is_some()) else {
            return vars;
        };
        let file = |cloud: Cloud| {
            dir.join(format!("{}.jwt", cloud.as_str()))
                .display()
                .to_string()
        };
        if let Some(aws) = &fed.aws {
            vars.insert("AWS_ROLE_ARN".into(), aws.role_arn.clone());
            vars.insert("AWS_WEB_IDENTITY_TOKEN_FILE".into(), file(Cloud::Aws));
            vars.insert("AWS_ROLE_SESSION_NAME".into(), self.session.clone());
        }
        if fed.gcp.is_some() {
            vars.insert(
                "GOOGLE_APPLICATION_CREDENTIALS".into(),
                dir.join("gcp.json").display().to_string(),
            );
        }
        if let Some(azure) = &fed.azure {
            vars.insert("AZURE_FEDERATED_TOKEN_FILE".into(), file(Cloud::Azure));
            vars.insert("AZURE_CLIENT_ID".into(), azure.client_id.clone());
            vars.insert("AZURE_TENANT_ID".into(), azure.tenant_id.clone());
        }
        vars
    }

    /// The GCP `external_account` configuration for `fed` (`None`: no GCP).
    fn gcp_config(&self, fed: &Federation) -> Option<serde_json::Value> {
        let gcp = fed.gcp.as_ref()?;
        let file = self.token_file(Cloud::Gcp)?;
        let mut config = serde_json::json!({
            "type": "external_account",
            "audience": gcp.audience,
            "subject_token_type": identity::GCP_SUBJECT_TOKEN_TYPE,
            "token_url": self.opts.gcp_sts_url,
            "credential_source": {
                "file": file.display().to_string(),
                "format": { "type": "text" },
            },
        });
        if let Some(sa) = &gcp.service_account {
            config["service_account_impersonation_url"] = format!(
                "{}/v1/projects/-/serviceAccounts/{sa}:generateAccessToken",
                self.opts.gcp_iam_url.trim_end_matches('/')
            )
            .into();
        }
        Some(config)
    }

    /// Write the tokens (all fetched and checked), then wire what changed.
    async fn install(
        &mut self,
        fed: &Federation,
        tokens: Vec<(Cloud, SecretText)>,
        state: Option<&AppState>,
    ) -> Result<(), PullError> {
        if let Some(dir) = &self.dir {
            create_private_dir_all(dir)?;
            for (cloud, token) in &tokens {
                let path = dir.join(format!("{}.jwt", cloud.as_str()));
                atomic_write(&path, token.expose_secret().as_bytes())?;
            }
            if let Some(config) = self.gcp_config(fed) {
                let text = serde_json::to_string_pretty(&config).expect("JSON serializes");
                common::fsutil::atomic_write_if_changed(&dir.join("gcp.json"), text.as_bytes())?;
            }
        }
        if self.wired.as_ref() == Some(fed) {
            return Ok(());
        }
        if let (Some(home), Some(aws), Some(file)) =
            (&self.home, &fed.aws, self.token_file(Cloud::Aws))
        {
            let profile = aws_profile(
                home,
                &aws.profile,
                &aws.role_arn,
                &file,
                &self.session,
                state,
            );
            profile.await?;
        }
        if let Some(state) = state {
            state.inner.envs.set_ambient(self.env_vars(fed)).await;
        }
        tracing::info!(clouds = ?fed.clouds(), "workload identity wired");
        self.wired = Some(fed.clone());
        Ok(())
    }

    /// The cluster is not federated (any more): stop refreshing, drop the
    /// env vars (the token files stay until their tokens expire).
    async fn absent(&mut self, state: Option<&AppState>) {
        if self.wired.take().is_some() {
            tracing::info!("the cluster is no longer federated: identity tokens are not refreshed");
            if let Some(state) = state {
                state.inner.envs.set_ambient(BTreeMap::new()).await;
            }
        }
        self.federated = false;
        self.status.clouds.clear();
        self.failures = 0;
        self.next_at = Instant::now() + jitter(ABSENT_RECHECK, 0.5);
    }

    fn succeeded(&mut self, clouds: Vec<Cloud>, ttl: u64) {
        let now = now_unix();
        self.federated = true;
        self.failures = 0;
        self.status.clouds = clouds;
        self.status.refreshed_at = now;
        self.status.expires_at = now + ttl;
        // Before half the TTL is gone, at a uniform random point of
        // [TTL/4, TTL/2]: nodes booted together do not refresh together
        // (10,000 nodes, 15 min: ~30 refreshes a second, never a burst).
        let half = Duration::from_secs(ttl.max(2)) / 2;
        self.next_at = Instant::now() + jitter(half.mul_f64(0.75), 1.0 / 3.0);
    }

    /// Not tried now (the store is away and the cluster not known to be
    /// federated): again after the poll's backoff.
    fn postpone(&mut self, poll: Duration, failures: u32) {
        self.next_at = Instant::now() + backoff(poll, failures.max(1));
    }

    fn failure(&mut self, error: &PullError, poll: Duration) {
        self.failures = self.failures.saturating_add(1);
        self.status.last_error = Some(error.to_string());
        self.status.last_error_at = now_unix();
        self.next_at = Instant::now() + backoff(poll, self.failures);
    }
}

/// Set `role_arn`, `web_identity_token_file` and `role_session_name` in
/// `profile` of `~/.aws/config` (merged: every other line kept), confined to
/// home, its resolved target checked against the placement policy's
/// deny-list, under the directory lock and the agent's write lock.
async fn aws_profile(
    home: &Path,
    profile: &str,
    role_arn: &str,
    token_file: &Path,
    session: &str,
    state: Option<&AppState>,
) -> Result<(), PullError> {
    let _guard = match state {
        Some(s) => Some(s.inner.write_lock.clone().lock_owned().await),
        None => None,
    };
    let home = home.to_path_buf();
    let checked = state.map(|s| (s.inner.policy.clone(), s.inner.canon_home.clone()));
    let (profile, role_arn, session) =
        (profile.to_owned(), role_arn.to_owned(), session.to_owned());
    let token_file = token_file.display().to_string();
    tokio::task::spawn_blocking(move || -> Result<(), PullError> {
        let display = "~/.aws/config";
        let file = common::fsutil::confine(&home, display)?;
        if let Some((policy, canon_home)) = &checked {
            policy
                .check_resolved(canon_home, "identity", &file.resolved())
                .map_err(|e| failed(e.to_string()))?;
        }
        let opened = file
            .open(true)?
            .ok_or_else(|| failed("cannot create ~/.aws"))?;
        let _lock = opened.lock_dir()?;
        let text = opened.read()?;
        let mut doc =
            IniDoc::existing(display, text.as_ref(), false).map_err(|e| failed(e.to_string()))?;
        let section = if profile == "default" {
            profile.clone()
        } else {
            format!("profile {profile}")
        };
        for (key, value) in [
            ("role_arn", role_arn.as_str()),
            ("web_identity_token_file", token_file.as_str()),
            ("role_session_name", session.as_str()),
        ] {
            doc.set(&section, key, value);
        }
        let new = doc.render();
        if text.as_ref().map(|t| t.expose_secret()) != Some(new.expose_secret()) {
            opened.write(new.expose_secret().as_bytes())?;
        }
        Ok(())
    })
    .await
    .map_err(|_| failed("writing ~/.aws/config panicked"))?
}

impl<N: Node> Puller<N> {
    /// On the poll: refresh the identity tokens when due (no store request
    /// otherwise). When the poll itself could not reach the store or log in
    /// (`poll`), no refresh is tried: it would meet the same failure and
    /// add requests (and logins) to a store in trouble; a federated node
    /// records it as its refresh error (status shows it once the store is
    /// back), and the next try follows the poll backoff. Failures are kept
    /// for the report; the token files keep their last good tokens.
    pub(super) async fn refresh_identity(&mut self, poll: &Result<(), PullError>) {
        if !self.identity.due() {
            return;
        }
        let result = match poll {
            Err(e @ (PullError::Store(_) | PullError::LoginRefused(_))) => {
                if !self.identity.federated {
                    self.identity.postpone(self.poll, self.failures);
                    return;
                }
                Err(failed(format!("not refreshed: {e}")))
            }
            _ => self.identity_cycle().await,
        };
        if let Err(e) = result {
            Metrics::inc(&self.metrics.identity_errors);
            tracing::warn!(error = %e, "workload identity refresh failed; the token files keep their last tokens");
            self.identity.failure(&e, self.poll);
        }
    }

    async fn identity_cycle(&mut self) -> Result<(), PullError> {
        let (prefix, cluster) = (self.bundle.prefix.clone(), self.bundle.cluster.clone());
        let state = self.node.agent().cloned();
        let Some((_, data)) = self
            .read(&identity::federation_path(&prefix, &cluster), None)
            .await?
        else {
            self.identity.absent(state.as_ref()).await;
            return Ok(());
        };
        let fed = Federation::deserialize(data.expose_secret()).map_err(|_| {
            failed(format!(
                "the federation document of cluster {cluster} is malformed"
            ))
        })?;
        fed.validate()
            .map_err(|e| failed(format!("the federation document of cluster {cluster}: {e}")))?;
        let mut tokens = Vec::new();
        let mut ttl = u64::MAX;
        for cloud in fed.clouds() {
            let (token, cloud_ttl) = self.identity_token(&prefix, &cluster, cloud).await?;
            ttl = ttl.min(cloud_ttl);
            tokens.push((cloud, token));
        }
        self.identity.install(&fed, tokens, state.as_ref()).await?;
        Metrics::inc(&self.metrics.identity_refreshes);
        self.identity.succeeded(fed.clouds(), ttl);
        Ok(())
    }

    /// One identity token: its text (checked: a compact JWT) and TTL.
    async fn identity_token(
        &mut self,
        prefix: &str,
        cluster: &str,
        cloud: Cloud,
    ) -> Result<(SecretText, u64), PullError> {
        let path = identity::token_api_path(prefix, cluster, cloud);
        let op = format!("fetch the {} identity token", cloud.as_str());
        let mut relogged = false;
        loop {
            let token = self.token().await?;
            let call = Call::new(&op, Method::GET, &path).token(token.expose_secret());
            let answer = self.client.send(&call).await?;
            Metrics::inc(&self.metrics.identity_tokens);
            if !answer.status.is_success() {
                match answer.fail(&op) {
                    openbao::Error::Forbidden { .. } if !relogged => {
                        // The batch token may have expired early: once
                        // more, fresh.
                        relogged = true;
                        self.forget_token();
                        continue;
                    }
                    e => return Err(e.into()),
                }
            }
            let mut json = answer.json(&op)?;
            let ttl = json["data"]["ttl"].as_u64().unwrap_or(0);
            let text = match json["data"]["token"].take() {
                serde_json::Value::String(s) => SecretText::new(s),
                _ => {
                    return Err(failed(format!(
                        "{op}: the answer from {} holds no token",
                        answer.url
                    )))
                }
            };
            if !identity::is_compact_jwt(text.expose_secret()) || ttl == 0 {
                return Err(failed(format!(
                    "{op}: the answer from {} is not a signed token with a TTL",
                    answer.url
                )));
            }
            return Ok((text, ttl));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed() -> Federation {
        let mut f = Federation::example();
        f.aws.as_mut().unwrap().profile = "gpu".into();
        f
    }

    #[test]
    fn every_path_is_the_node_s_own() {
        let state = Path::new("/home/u/.rh/agent");
        let r = Refresher::new(
            IdentityConfig::default(),
            Some(state),
            Some("/home/u".into()),
            "gpu-1-abc def/../x",
        );
        let vars = r.env_vars(&fed());
        assert_eq!(
            vars["AWS_WEB_IDENTITY_TOKEN_FILE"],
            "/home/u/.rh/agent/identity/aws.jwt"
        );
        assert_eq!(
            vars["AZURE_FEDERATED_TOKEN_FILE"],
            "/home/u/.rh/agent/identity/azure.jwt"
        );
        assert_eq!(
            vars["GOOGLE_APPLICATION_CREDENTIALS"],
            "/home/u/.rh/agent/identity/gcp.json"
        );
        assert_eq!(vars["AWS_ROLE_SESSION_NAME"], "rh-gpu-1-abc-def-..-x");
        let gcp = r.gcp_config(&fed()).unwrap();
        assert_eq!(
            gcp["credential_source"]["file"],
            "/home/u/.rh/agent/identity/gcp.jwt"
        );
        assert!(gcp["credential_source"].get("executable").is_none());
        assert_eq!(gcp["token_url"], identity::GCP_STS_URL);
        assert_eq!(
            gcp["service_account_impersonation_url"],
            "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/trainer@proj-1.iam.gserviceaccount.com:generateAccessToken"
        );
        // A simulated node wires nothing.
        let sim = Refresher::new(IdentityConfig::default(), None, None, "n");
        assert!(sim.env_vars(&fed()).is_empty() && sim.gcp_config(&fed()).is_none());
    }

    #[test]
    fn refreshes_fall_in_the_second_quarter_of_the_ttl() {
        let mut r = Refresher::new(IdentityConfig::default(), None, None, "n");
        let (mut early, mut late) = (false, false);
        for _ in 0..200 {
            let before = Instant::now();
            r.succeeded(vec![Cloud::Aws], 900);
            let wait = r.next_at - before;
            assert!(
                wait >= Duration::from_secs(224) && wait <= Duration::from_secs(451),
                "{wait:?}"
            );
            early |= wait < Duration::from_secs(260);
            late |= wait > Duration::from_secs(415);
            assert_eq!(r.status.expires_at - r.status.refreshed_at, 900);
        }
        assert!(early && late, "refreshes are not spread over the quarter");
    }

    #[tokio::test]
    async fn the_aws_profile_is_merged_into_the_config() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        let config = home.path().join(".aws/config");
        let before = "# mine\n[default]\nregion = eu-west-3\n\n[profile gpu]\nregion = us-east-1\noutput = json\n";
        std::fs::write(&config, before).unwrap();
        let token = home.path().join(".rh/agent/identity/aws.jwt");
        let mut written = Vec::new();
        // Twice: the second time changes nothing.
        for _ in 0..2 {
            let arn = "arn:aws:iam::123456789012:role/r";
            aws_profile(home.path(), "gpu", arn, &token, "rh-n1", None)
                .await
                .unwrap();
            written.push(std::fs::read_to_string(&config).unwrap());
        }
        let after = &written[0];
        assert!(after.starts_with(before), "{after}");
        assert!(after.contains("role_arn = arn:aws:iam::123456789012:role/r\n"));
        assert!(after.contains(&format!("web_identity_token_file = {}\n", token.display())));
        assert!(after.contains("role_session_name = rh-n1\n"));
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&config).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(written[1], written[0]);
    }
}

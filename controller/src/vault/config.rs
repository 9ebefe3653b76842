//! Where the remote store is and how to reach it: server URL(s), KV v2 mount,
//! path prefix, optional CA certificate and the token. Read from
//! `~/.rh/config` (the `"vault"` section of a JSON document), the token from
//! `VAULT_TOKEN` or the 0600 file `~/.rh/vault-token`; `VAULT_ADDR`,
//! `VAULT_TOKEN` and `VAULT_CACERT` override the file. Plain `http://` to a
//! host that is not loopback is allowed only with `RH_VAULT_ALLOW_HTTP=1`
//! or `"allow_insecure_http": true` in the section (the client refuses it
//! otherwise).
//! The token lives in a [`Token`] (redacted `Debug`, zeroed on drop); this
//! module never prints it and refuses a token file others can read.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::fsutil::{self, atomic_write, create_private_dir_all, PathError};
use common::SecretText;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

/// Default KV v2 mount.
pub const DEFAULT_MOUNT: &str = "secret";
/// The environment variable that allows plain `http://` to a host that is
/// not loopback (`1`, `true` or `yes`).
pub const ALLOW_HTTP_ENV: &str = "RH_VAULT_ALLOW_HTTP";

/// Something wrong with the remote store configuration.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("no remote store configured: run `controller login --url URL` or set VAULT_ADDR")]
    NoServer,
    #[error(
        "no token for the remote store: set VAULT_TOKEN or run `controller login` \
         (token file {path})"
    )]
    NoToken { path: String },
    #[error("token file {path} is readable by others (mode {mode:o}): run `chmod 600 {path}`")]
    TokenFileMode { path: String, mode: u32 },
    #[error("token file {path} is empty")]
    EmptyToken { path: String },
    #[error("server URL {url:?} is not valid: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("{what} {value:?} is not valid: use letters, digits, '-', '_', '.', '@' and '/' (no '..', no leading or trailing '/')")]
    BadPath { what: &'static str, value: String },
    #[error("config file {path} is not valid JSON: {reason}")]
    Parse { path: String, reason: String },
    #[error(transparent)]
    Path(#[from] PathError),
}

/// A Vault token. Redacted in `Debug`, zeroed on drop, read through
/// [`Token::expose_secret`].
#[derive(Clone)]
pub struct Token(SecretText);

impl Token {
    /// Wrap a token (surrounding whitespace removed).
    pub fn new(token: &str) -> Self {
        Self(SecretText::new(token.trim().to_owned()))
    }

    /// The token itself: only for the `X-Vault-Token` header and the token file.
    pub fn expose_secret(&self) -> &str {
        self.0.expose_secret()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.0.expose_secret().is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where the token came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `VAULT_TOKEN`.
    Env,
    /// `~/.rh/vault-token`.
    File,
    /// Given by the caller (read on stdin by `login`).
    Given,
}

/// The `"vault"` section of `~/.rh/config`, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConfig {
    /// Server URLs, tried in order.
    #[serde(default)]
    pub urls: Vec<String>,
    /// KV v2 mount (default `secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<String>,
    /// Path prefix under the mount (default `rh/<user>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// PEM CA certificate(s) added to the trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Send the token over plain `http://` to hosts that are not loopback.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
}

/// The resolved configuration: file, then environment overrides, then defaults.
#[derive(Debug, Clone)]
pub struct VaultConfig {
    pub urls: Vec<String>,
    pub mount: String,
    pub prefix: String,
    pub ca_cert: Option<PathBuf>,
    pub token: Token,
    pub token_source: TokenSource,
    /// The user opted in to plain `http://` off this machine.
    pub allow_insecure_http: bool,
}

/// `~/.rh/config`.
pub fn config_path(home: &Path) -> PathBuf {
    home.join(".rh").join("config")
}

/// `~/.rh/vault-token`.
pub fn token_path(home: &Path) -> PathBuf {
    home.join(".rh").join("vault-token")
}

/// The whole `~/.rh/config` document (an empty object when absent).
pub(crate) fn read_document(home: &Path) -> Result<Map<String, Value>, ConfigError> {
    let path = config_path(home);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(PathError::io("read", &path, e).into()),
    };
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    serde_json::from_str::<Map<String, Value>>(&text).map_err(|e| ConfigError::Parse {
        path: fsutil::tilde_path(home, &path),
        reason: e.to_string(),
    })
}

/// The `"vault"` section of `~/.rh/config`, if any.
pub fn load_stored(home: &Path) -> Result<Option<StoredConfig>, ConfigError> {
    let doc = read_document(home)?;
    match doc.get("vault") {
        None | Some(Value::Null) => Ok(None),
        Some(section) => serde_json::from_value(section.clone())
            .map(Some)
            .map_err(|e| ConfigError::Parse {
                path: fsutil::tilde_path(home, &config_path(home)),
                reason: format!("section \"vault\": {e}"),
            }),
    }
}

/// Save the `"vault"` section, keeping every other key of the document.
pub fn save_stored(home: &Path, stored: &StoredConfig) -> Result<PathBuf, ConfigError> {
    let mut doc = read_document(home)?;
    doc.insert(
        "vault".into(),
        serde_json::to_value(stored).expect("config serializes"),
    );
    write_document(home, &doc)
}

/// Remove the `"vault"` section (the file itself when nothing else is left).
/// Returns whether there was one.
pub fn remove_stored(home: &Path) -> Result<bool, ConfigError> {
    let mut doc = read_document(home)?;
    let had = doc.remove("vault").is_some();
    if doc.is_empty() {
        fsutil::remove_file(&config_path(home))?;
    } else if had {
        write_document(home, &doc)?;
    }
    Ok(had)
}

fn write_document(home: &Path, doc: &Map<String, Value>) -> Result<PathBuf, ConfigError> {
    let path = config_path(home);
    create_private_dir_all(&home.join(".rh"))?;
    let mut text = serde_json::to_string_pretty(doc).expect("config serializes");
    text.push('\n');
    atomic_write(&path, text.as_bytes())?;
    Ok(path)
}

/// Save a token to `~/.rh/vault-token` (0600).
pub fn save_token(home: &Path, token: &Token) -> Result<PathBuf, ConfigError> {
    let path = token_path(home);
    create_private_dir_all(&home.join(".rh"))?;
    let body = SecretText::new(format!("{}\n", token.expose_secret()));
    atomic_write(&path, body.expose_secret().as_bytes())?;
    Ok(path)
}

/// Read `~/.rh/vault-token` when it exists; refuse it when others can read it.
pub fn read_token_file(home: &Path) -> Result<Option<Token>, ConfigError> {
    let path = token_path(home);
    let shown = fsutil::tilde_path(home, &path);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(PathError::io("inspect", &path, e).into()),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::TokenFileMode { path: shown, mode });
    }
    let text = fsutil::read_optional(&path)?.unwrap_or_default();
    let token = Token::new(text.expose_secret());
    if token.is_empty() {
        return Err(ConfigError::EmptyToken { path: shown });
    }
    Ok(Some(token))
}

/// The user name for the default prefix: `$USER`, `$LOGNAME`, else the
/// account of this uid.
fn user_name(env: &dyn Fn(&str) -> Option<String>) -> String {
    env("USER")
        .or_else(|| env("LOGNAME"))
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| "user".into())
}

/// Check a server URL as the HTTP client reads it (`common::store_url`):
/// http or https, a host, no credentials, query or fragment, and the same
/// to the client as written (no surrounding blanks, no `http:h` or `\\`).
pub fn parse_url(url: &str) -> Result<common::store_url::StoreUrl, ConfigError> {
    common::store_url::parse(url).map_err(|e| ConfigError::BadUrl {
        url: common::store_url::shown(url),
        reason: e.to_string(),
    })
}

/// [`parse_url`], as the text requests are made on (no trailing `/`).
pub fn normalize_url(url: &str) -> Result<String, ConfigError> {
    parse_url(url).map(|u| u.as_str().to_owned())
}

/// Split a list of URLs (`VAULT_ADDR` may hold several, comma-separated).
pub fn split_urls(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Check a mount or prefix: path segments of safe characters.
pub fn check_path(what: &'static str, value: &str) -> Result<String, ConfigError> {
    let ok = !value.is_empty()
        && !value.starts_with('/')
        && !value.ends_with('/')
        && value.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        });
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ConfigError::BadPath {
            what,
            value: value.escape_debug().to_string(),
        })
    }
}

impl VaultConfig {
    /// Resolve the configuration from `~/.rh/config`, the environment and
    /// the defaults. `token` (from the caller) wins over `VAULT_TOKEN`, which
    /// wins over the token file.
    pub fn resolve(
        home: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        urls: &[String],
        token: Option<Token>,
    ) -> Result<Self, ConfigError> {
        let stored = load_stored(home)?.unwrap_or_default();
        let env_nonempty = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let raw_urls = if !urls.is_empty() {
            urls.to_vec()
        } else if let Some(addr) = env_nonempty("VAULT_ADDR") {
            split_urls(&addr)
        } else {
            stored.urls.clone()
        };
        if raw_urls.is_empty() {
            return Err(ConfigError::NoServer);
        }
        let mut urls = Vec::with_capacity(raw_urls.len());
        for url in &raw_urls {
            let url = normalize_url(url)?;
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        let mount = check_path("KV mount", stored.mount.as_deref().unwrap_or(DEFAULT_MOUNT))?;
        let prefix = match &stored.prefix {
            Some(prefix) => check_path("path prefix", prefix)?,
            None => check_path("path prefix", &format!("rh/{}", user_name(env)))?,
        };
        let ca_cert = env_nonempty("VAULT_CACERT")
            .map(|p| fsutil::expand_home(home, &p))
            .or_else(|| stored.ca_cert.clone());
        let (token, token_source) = match token {
            Some(token) => (token, TokenSource::Given),
            None => match env_nonempty("VAULT_TOKEN") {
                Some(t) => (Token::new(&t), TokenSource::Env),
                None => match read_token_file(home)? {
                    Some(t) => (t, TokenSource::File),
                    None => {
                        return Err(ConfigError::NoToken {
                            path: fsutil::tilde_path(home, &token_path(home)),
                        })
                    }
                },
            },
        };
        let allow_insecure_http = stored.allow_insecure_http
            || env_nonempty(ALLOW_HTTP_ENV).is_some_and(|v| {
                matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
            });
        Ok(Self {
            urls,
            mount,
            prefix,
            ca_cert,
            token,
            token_source,
            allow_insecure_http,
        })
    }

    /// The part of this configuration that is saved (no token).
    pub fn to_stored(&self) -> StoredConfig {
        StoredConfig {
            urls: self.urls.clone(),
            mount: Some(self.mount.clone()),
            prefix: Some(self.prefix.clone()),
            ca_cert: self.ca_cert.clone(),
            allow_insecure_http: self.allow_insecure_http,
        }
    }

    /// The key of this store in `~/.rh/vault-state.json`.
    pub fn store_key(&self) -> String {
        format!("{}/{}", self.mount, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_overrides_file_and_defaults_apply() {
        let home = tempfile::tempdir().unwrap();
        save_stored(
            home.path(),
            &StoredConfig {
                urls: vec!["http://127.0.0.1:1/".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let env = env_of(&[("USER", "alice"), ("VAULT_TOKEN", "s.tok-123")]);
        let cfg = VaultConfig::resolve(home.path(), &env, &[], None).unwrap();
        assert_eq!(cfg.urls, vec!["http://127.0.0.1:1".to_string()]);
        assert_eq!(cfg.mount, "secret");
        assert_eq!(cfg.prefix, "rh/alice");
        assert_eq!(cfg.token_source, TokenSource::Env);
        let env = env_of(&[
            ("USER", "alice"),
            ("VAULT_TOKEN", "s.tok-123"),
            ("VAULT_ADDR", "http://a:1, https://b:2"),
            ("VAULT_CACERT", "~/ca.pem"),
        ]);
        let cfg = VaultConfig::resolve(home.path(), &env, &[], None).unwrap();
        assert_eq!(cfg.urls, vec!["http://a:1", "https://b:2"]);
        assert_eq!(cfg.ca_cert, Some(home.path().join("ca.pem")));
        let dbg = format!("{cfg:?} {cfg:#?}");
        assert!(!dbg.contains("tok-123"), "{dbg}");
    }

    #[test]
    fn token_file_must_be_private_and_config_keeps_other_keys() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(home.path().join(".rh")).unwrap();
        std::fs::write(config_path(home.path()), r#"{"other": {"x": 1}}"#).unwrap();
        save_stored(
            home.path(),
            &StoredConfig {
                urls: vec!["http://h:1".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let path = save_token(home.path(), &Token::new("tok-xyz")).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let env = env_of(&[]);
        let cfg = VaultConfig::resolve(home.path(), &env, &[], None).unwrap();
        assert_eq!(cfg.token.expose_secret(), "tok-xyz");
        assert_eq!(cfg.token_source, TokenSource::File);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = VaultConfig::resolve(home.path(), &env, &[], None).unwrap_err();
        assert!(matches!(err, ConfigError::TokenFileMode { .. }), "{err}");
        assert!(!err.to_string().contains("tok-xyz"));
        assert!(remove_stored(home.path()).unwrap());
        let doc = std::fs::read_to_string(config_path(home.path())).unwrap();
        assert!(doc.contains("other") && !doc.contains("vault"), "{doc}");
    }

    #[test]
    fn plain_http_opt_in_comes_from_env_or_file_and_is_saved() {
        let home = tempfile::tempdir().unwrap();
        let base = [("VAULT_ADDR", "http://10.0.0.5:8200"), ("VAULT_TOKEN", "t")];
        let cfg = VaultConfig::resolve(home.path(), &env_of(&base), &[], None).unwrap();
        assert!(!cfg.allow_insecure_http);
        assert!(!serde_json::to_string(&cfg.to_stored())
            .unwrap()
            .contains("allow_insecure_http"));
        for (value, allowed) in [("1", true), ("yes", true), ("0", false), ("", false)] {
            let env = env_of(&[base[0], base[1], (ALLOW_HTTP_ENV, value)]);
            let cfg = VaultConfig::resolve(home.path(), &env, &[], None).unwrap();
            assert_eq!(cfg.allow_insecure_http, allowed, "{value:?}");
            assert_eq!(cfg.to_stored().allow_insecure_http, allowed);
        }
        let env = env_of(&[base[0], base[1], (ALLOW_HTTP_ENV, "1")]);
        let cfg = VaultConfig::resolve(home.path(), &env, &[], None).unwrap();
        save_stored(home.path(), &cfg.to_stored()).unwrap();
        let cfg = VaultConfig::resolve(home.path(), &env_of(&base), &[], None).unwrap();
        assert!(cfg.allow_insecure_http);
    }

    #[test]
    fn urls_and_paths_are_checked() {
        assert_eq!(normalize_url("https://x:8200/").unwrap(), "https://x:8200");
        assert!(normalize_url("ftp://x").is_err());
        assert!(normalize_url("http://u:p@x").is_err());
        // The same check as the agent's (common::store_url): a URL the HTTP
        // client reads otherwise than written is refused, not rewritten.
        for (url, client_reads) in [
            (" https://vault:8200", "https://vault:8200"),
            ("http:10.0.0.2:8200", "http://10.0.0.2:8200"),
            ("HTTP:\\\\10.0.0.2", "http://10.0.0.2"),
            (
                "http://10.0.0.2:8200\\@127.0.0.1",
                "http://10.0.0.2:8200/@127.0.0.1",
            ),
            ("http://127.1:8200", "http://127.0.0.1:8200"),
        ] {
            let err = normalize_url(url).unwrap_err().to_string();
            assert!(
                err.contains(&format!("reads it as {client_reads},")),
                "{url:?}: {err}"
            );
        }
        assert!(normalize_url("http://127.0.0.1@10.0.0.2").is_err());
        // errors never repeat credentials or a query (VAULT_ADDR pasted with a token)
        for url in [
            "https://admin:hunter2-pw@vault:8200/",
            "https://vault:8200/?token=hunter2-pw",
            "ftp://u:hunter2-pw@vault",
            "http://u:hunter2-pw@[bad",
            "u:hunter2-pw@vault",
        ] {
            let err = normalize_url(url).unwrap_err().to_string();
            assert!(!err.contains("hunter2"), "{err}");
            assert!(err.contains("vault") || err.contains("[bad"), "{err}");
        }
        assert!(check_path("p", "rh/alice").is_ok());
        for bad in ["", "/a", "a/", "a/../b", "a//b", "a b"] {
            assert!(check_path("p", bad).is_err(), "{bad}");
        }
        let home = tempfile::tempdir().unwrap();
        let env = env_of(&[("VAULT_TOKEN", "t")]);
        assert!(matches!(
            VaultConfig::resolve(home.path(), &env, &[], None),
            Err(ConfigError::NoServer)
        ));
        let env = env_of(&[("VAULT_ADDR", "http://h:1")]);
        assert!(matches!(
            VaultConfig::resolve(home.path(), &env, &[], None),
            Err(ConfigError::NoToken { .. })
        ));
    }
}

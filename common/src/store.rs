//! The local secret store: one JSON file per secret in `~/.rh/secrets/NAME.json`
//! (mode 0600, directory 0700, written atomically). Reads the reference's own
//! files (`{"name": "~/NAME", "resource_type": "secret", "resource_subtype":
//! ..., "visibility": "private", "provider"?, "path"?, "env_vars"?, "values"?}`,
//! with or without "provenance", names starting with `~/` or `/`) and writes
//! the same shape. A saved provider secret without "values" (the reference
//! keeps only its path) gets its values from that file on load.
//! Errors name the secret and the file, never a value or a line of a file.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fsutil::{self, PathError};
use crate::model::Secret;
use crate::names::{validate_secret_name, NameError};
use crate::providers::{self, ProviderError, SourceFile};
use crate::secret_value::Values;
use crate::session::SessionSpec;

/// Something wrong with the local store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("no saved secret named {name:?}")]
    NotFound { name: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{path}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Malformed {
        path: String,
        line: Option<usize>,
        reason: String,
    },
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Provider(#[from] ProviderError),
}

/// The file as the reference writes it.
#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(default)]
    name: Option<String>,
    #[serde(default = "resource_type")]
    resource_type: String,
    #[serde(default)]
    resource_subtype: Option<String>,
    #[serde(default)]
    visibility: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    env_vars: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    values: Option<Values>,
    /// A session secret's spec (`crate::session`): how to mint it; no values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    session: Option<SessionSpec>,
}

fn resource_type() -> String {
    "secret".to_owned()
}

/// The reference's class name for a provider's secrets.
pub fn resource_subtype(provider: Option<&str>) -> &'static str {
    match provider {
        None => "Secret",
        Some("aws") => "AWSSecret",
        Some("azure") => "AzureSecret",
        Some("gcp") => "GCPSecret",
        Some("github") => "GitHubSecret",
        Some("huggingface") => "HuggingFaceSecret",
        Some("kubernetes") => "KubeConfigSecret",
        Some("lambda") => "LambdaSecret",
        Some("docker") => "DockerRegistrySecret",
        Some("ssh") => "SSHSecret",
        Some("sky") => "SkySecret",
        Some("anthropic") => "AnthropicSecret",
        Some("cohere") => "CohereSecret",
        Some("langchain") => "LangChainSecret",
        Some("openai") => "OpenAISecret",
        Some("pinecone") => "PineconeSecret",
        Some("wandb") => "WandBSecret",
        Some(_) => "ProviderSecret",
    }
}

/// `~/.rh/secrets`.
pub fn secrets_dir(home: &Path) -> PathBuf {
    home.join(".rh").join("secrets")
}

fn file_of(home: &Path, name: &str) -> Result<PathBuf, StoreError> {
    validate_secret_name(name)?;
    Ok(secrets_dir(home).join(format!("{name}.json")))
}

/// Save (create or replace) a secret: `~/.rh/secrets/NAME.json`, mode 0600,
/// in a 0700 directory (an existing, looser directory is tightened).
pub fn save(home: &Path, secret: &Secret) -> Result<(), StoreError> {
    let path = file_of(home, &secret.name)?;
    let dir = secrets_dir(home);
    fsutil::create_private_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(fsutil::DIR_MODE))
        .map_err(|e| PathError::io("chmod", &dir, e))?;
    let record = Record {
        name: Some(format!("~/{}", secret.name)),
        resource_type: resource_type(),
        resource_subtype: Some(resource_subtype(secret.provider.as_deref()).to_owned()),
        visibility: Some("private".to_owned()),
        provider: secret.provider.clone(),
        path: secret.path.clone(),
        env_vars: secret.env_vars.clone(),
        values: Some(secret.values.clone()),
        session: None,
    };
    let mut text = serde_json::to_string_pretty(&record).unwrap_or_default();
    text.push('\n');
    let text = crate::SecretText::new(text);
    fsutil::atomic_write(&path, text.expose_secret().as_bytes())?;
    Ok(())
}

/// Save a session secret (`crate::session`): its provider and how to mint
/// it, no values. `~/.rh/secrets/NAME.json` like every secret (0600).
pub fn save_session(
    home: &Path,
    name: &str,
    provider: &str,
    spec: &SessionSpec,
) -> Result<(), StoreError> {
    let path = file_of(home, name)?;
    let dir = secrets_dir(home);
    fsutil::create_private_dir_all(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(fsutil::DIR_MODE))
        .map_err(|e| PathError::io("chmod", &dir, e))?;
    let record = Record {
        name: Some(format!("~/{name}")),
        resource_type: resource_type(),
        resource_subtype: Some(resource_subtype(Some(provider)).to_owned()),
        visibility: Some("private".to_owned()),
        provider: Some(provider.to_owned()),
        path: None,
        env_vars: None,
        values: None,
        session: Some(spec.clone()),
    };
    let mut text = serde_json::to_string_pretty(&record).unwrap_or_default();
    text.push('\n');
    fsutil::atomic_write(&path, text.as_bytes())?;
    Ok(())
}

/// The saved session secrets: name, provider and spec, sorted by name.
/// Files that are not session secrets are skipped (a broken one too: the
/// listing of secrets reports it).
pub fn list_sessions(home: &Path) -> Vec<(String, String, SessionSpec)> {
    let Ok(entries) = fs::read_dir(secrets_dir(home)) else {
        return vec![];
    };
    let mut out = vec![];
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if validate_secret_name(name).is_err() {
            continue;
        }
        let Ok(Some(text)) = fsutil::read_optional(&entry.path()) else {
            continue;
        };
        if let Ok(Record {
            provider: Some(provider),
            session: Some(spec),
            ..
        }) = serde_json::from_str::<Record>(text.expose_secret())
        {
            out.push((name.to_owned(), provider, spec));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Load a saved secret. [`StoreError::NotFound`] when there is none.
pub fn load(home: &Path, name: &str) -> Result<Secret, StoreError> {
    let path = file_of(home, name)?;
    let text = match fsutil::read_optional(&path)? {
        Some(t) => t,
        None => return Err(StoreError::NotFound { name: name.into() }),
    };
    let display = fsutil::tilde_path(home, &path);
    let record: Record = serde_json::from_str(text.expose_secret()).map_err(|e| {
        // serde_json's category, line and column only: its message can quote the input
        StoreError::Malformed {
            path: display.clone(),
            line: Some(e.line()),
            reason: format!(
                "invalid secret file ({:?} error at column {})",
                e.classify(),
                e.column()
            ),
        }
    })?;
    if record.resource_type != "secret" {
        return Err(StoreError::Malformed {
            path: display,
            line: None,
            reason: format!(
                "resource_type is {:?}, not \"secret\"",
                record.resource_type
            ),
        });
    }
    // A subtype naming a provider class stands for that provider when "provider" is absent.
    let provider = record.provider.or_else(|| {
        let sub = record.resource_subtype.as_deref()?;
        providers::builtin_ids()
            .into_iter()
            .find(|id| resource_subtype(Some(id)) == sub)
            .map(str::to_owned)
    });
    let mut secret = Secret {
        name: name.to_owned(),
        provider,
        path: record.path,
        env_vars: record.env_vars,
        values: record.values.unwrap_or_default(),
    };
    if secret.values.is_empty() {
        fill_from_path(home, &mut secret)?;
    }
    Ok(secret)
}

/// The reference saves path-based provider secrets without values: read them
/// from the file. A missing file leaves the values empty.
fn fill_from_path(home: &Path, secret: &mut Secret) -> Result<(), StoreError> {
    let (Some(_), Some(path)) = (&secret.provider, &secret.path) else {
        return Ok(());
    };
    let provider = providers::for_secret(secret.provider.as_deref());
    let names = provider.files(path);
    let mut texts = Vec::with_capacity(names.len());
    for name in &names {
        match fsutil::read_optional(&fsutil::expand_home(home, name))? {
            Some(t) => texts.push(t),
            None => return Ok(()),
        }
    }
    let files: Vec<_> = names
        .iter()
        .zip(&texts)
        .map(|(path, text)| SourceFile { path, text })
        .collect();
    secret.values = provider.parse(&files)?;
    Ok(())
}

/// Whether a secret of this name is saved.
pub fn exists(home: &Path, name: &str) -> bool {
    file_of(home, name).is_ok_and(|p| p.is_file())
}

/// Every saved secret, sorted by name. Files that are not secrets
/// (temp files, other extensions) are skipped; a broken secret file is an error.
pub fn list(home: &Path) -> Result<Vec<Secret>, StoreError> {
    let dir = secrets_dir(home);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(PathError::io("list", &dir, e).into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PathError::io("list", &dir, e))?;
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) else {
            continue;
        };
        if validate_secret_name(name).is_ok() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    names.iter().map(|n| load(home, n)).collect()
}

/// Delete a saved secret (its credential files are left alone).
pub fn delete(home: &Path, name: &str) -> Result<(), StoreError> {
    let path = file_of(home, name)?;
    if !path.is_file() {
        return Err(StoreError::NotFound { name: name.into() });
    }
    fsutil::remove_file(&path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret_value::values_from;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn save_load_list_delete_with_private_modes() {
        let home = tempfile::tempdir().unwrap();
        let h = home.path();
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
        let mut s = Secret::base(
            "aws",
            values_from([("access_key", "AKIAX"), ("secret_key", "S")]),
        );
        s.provider = Some("aws".into());
        s.path = Some("~/.aws/credentials".into());
        save(h, &s).unwrap();
        save(h, &Secret::base("b-base", values_from([("k", "v")]))).unwrap();
        nix::sys::stat::umask(old);
        let file = secrets_dir(h).join("aws.json");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&secrets_dir(h)), 0o700);
        assert_eq!(mode(&h.join(".rh")), 0o700);
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"name": "~/aws", "resource_type": "secret", "resource_subtype": "AWSSecret",
                "visibility": "private", "provider": "aws", "path": "~/.aws/credentials",
                "values": {"access_key": "AKIAX", "secret_key": "S"}})
        );
        assert_eq!(load(h, "aws").unwrap(), s);
        assert!(exists(h, "aws") && !exists(h, "nope") && !exists(h, "../x"));
        let names: Vec<_> = list(h).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["aws", "b-base"]);
        delete(h, "aws").unwrap();
        assert!(matches!(load(h, "aws"), Err(StoreError::NotFound { .. })));
        assert!(matches!(delete(h, "aws"), Err(StoreError::NotFound { .. })));
        assert!(matches!(load(h, "../etc"), Err(StoreError::Name(_))));
    }

    #[test]
    fn tightens_a_loose_existing_dir() {
        let home = tempfile::tempdir().unwrap();
        fs::create_dir_all(secrets_dir(home.path())).unwrap();
        fs::set_permissions(secrets_dir(home.path()), fs::Permissions::from_mode(0o755)).unwrap();
        save(home.path(), &Secret::base("x", values_from([("k", "v")]))).unwrap();
        assert_eq!(mode(&secrets_dir(home.path())), 0o700);
    }

    #[test]
    fn malformed_file_names_file_and_line_not_content() {
        let home = tempfile::tempdir().unwrap();
        fs::create_dir_all(secrets_dir(home.path())).unwrap();
        fs::write(
            secrets_dir(home.path()).join("bad.json"),
            "{\"values\": {\"k\": \"topsecret\"}\n,,",
        )
        .unwrap();
        let err = load(home.path(), "bad").unwrap_err().to_string();
        assert!(err.starts_with("~/.rh/secrets/bad.json line 2"), "{err}");
        assert!(!err.contains("topsecret"), "{err}");
        assert!(list(home.path()).is_err());
    }
}
